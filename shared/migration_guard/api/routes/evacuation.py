"""A node's evacuation pre-flight: can it go into maintenance, and what would be stuck."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response

from migration_guard.api import deps
from migration_guard.api.deps import NODE_SCHEMA, Authorize
from migration_guard.api.errors import json_response, responses
from migration_guard.api.models.evacuation import EvacuationBody
from migration_guard.service.guard import GuardService


def router(service: GuardService, authorize: Authorize) -> APIRouter:
    api = APIRouter(dependencies=[Depends(authorize)])

    @api.get(
        "/v1/nodes/{node}/evacuation",
        summary="Every VM on the node against every node it could move to; the stuck ones first",
        response_model=None,
        responses=responses(EvacuationBody, "the pre-flight: summary, stuck VMs with why and fix, every VM"),
    )
    async def evacuation(
        node: str = Path(description="the node to empty", pattern=NODE_SCHEMA["pattern"]),
    ) -> Response:
        return json_response(await service.evacuation(deps.node_name(node, "node")))

    return api
