"""The cluster: its nodes and the CPU type to use (the matrix: routes/matrix.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from migration_guard.api import deps
from migration_guard.api.deps import Authorize
from migration_guard.api.errors import json_response, responses
from migration_guard.api.models import ClusterView
from migration_guard.api.models.whatif import RecommendationWhatIfBody
from migration_guard.service.guard import GuardService


def router(service: GuardService, authorize: Authorize) -> APIRouter:
    api = APIRouter(dependencies=[Depends(authorize)])

    @api.get(
        "/v1/cluster",
        response_model=None,
        responses=responses(ClusterView, "every node with its CPU, versions and best CPU type"),
    )
    async def cluster() -> Response:
        return json_response(await service.cluster_view())

    @api.get(
        "/v1/cluster/recommendation",
        response_model=None,
        responses=responses(
            RecommendationWhatIfBody,
            "the CPU type the nodes all run, and the VMs at risk; with add/remove: what_if",
        ),
    )
    async def recommendation(
        nodes: str | None = Query(
            None, description="comma-separated node names (default: every online node)"
        ),
        add: list[str] = Query(  # noqa: B008 - FastAPI's way to declare a repeatable parameter
            [], max_length=16, description="what if: add a node with this shipped CPU (GET /v1/cpus)"
        ),
        remove: list[str] = Query([], description="what if: remove this node"),  # noqa: B008
    ) -> Response:
        names = [deps.node_name(n.strip(), "nodes") for n in nodes.split(",") if n.strip()] if nodes else None
        gone = [deps.node_name(n.strip(), "remove") for n in remove if n.strip()]
        return json_response(await service.recommendation(names, add=add, remove=gone))

    return api
