"""Which VMs the guard does not protect (no hookscript, or its file missing on some node)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from migration_guard.api.deps import Authorize
from migration_guard.api.errors import json_response, responses
from migration_guard.api.models.coverage import CoverageBody
from migration_guard.service.guard import GuardService


def router(service: GuardService, authorize: Authorize) -> APIRouter:
    api = APIRouter(dependencies=[Depends(authorize)])

    @api.get(
        "/v1/coverage",
        response_model=None,
        responses=responses(CoverageBody, "VMs without the guard's hookscript, and hookscript files missing"),
    )
    async def coverage() -> Response:
        return json_response(await service.coverage.body())

    return api
