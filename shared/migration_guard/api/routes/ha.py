"""HA recovery risks: the HA VMs a node failure (or relocation) would start where they cannot run."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from migration_guard.api.deps import Authorize
from migration_guard.api.errors import json_response, responses
from migration_guard.api.models.ha import HaRisksBody
from migration_guard.service.guard import GuardService


def router(service: GuardService, authorize: Authorize) -> APIRouter:
    api = APIRouter(dependencies=[Depends(authorize)])

    @api.get(
        "/v1/ha/risks",
        summary="HA VMs that HA may start on a node that cannot run their CPU type",
        response_model=None,
        responses=responses(
            HaRisksBody,
            "the risks (an error, never an empty list, when HA's configuration cannot be read)",
        ),
    )
    async def ha_risks() -> Response:
        return json_response(await service.ha_risks())

    return api
