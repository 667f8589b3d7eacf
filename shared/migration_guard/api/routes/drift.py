"""The drift alarm: the latest changes of the nodes' CPU facts (service/drift.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from migration_guard.api import deps
from migration_guard.api.deps import Authorize
from migration_guard.api.errors import json_response, responses
from migration_guard.api.models.drift import DriftBody
from migration_guard.service.guard import GuardService


def router(service: GuardService, authorize: Authorize) -> APIRouter:
    api = APIRouter(dependencies=[Depends(authorize)])

    @api.get(
        "/v1/drift",
        response_model=None,
        responses=responses(DriftBody, "the latest changes of the nodes' CPU facts, newest first"),
    )
    async def drift(
        limit: int = Query(50, ge=1, le=1000, description="how many, newest first"),
        node: str | None = Query(None, description="only this node's changes"),
    ) -> Response:
        name = deps.node_name(node, "node") if node is not None else None
        events = await service.drift.recent(limit, name)
        return json_response({"cluster": service.cluster, "events": events})

    return api
