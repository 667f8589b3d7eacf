"""The cluster's best custom CPU model: computed (GET), or created in Proxmox (POST)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from migration_guard.api import deps
from migration_guard.api.deps import Authorize
from migration_guard.api.errors import json_response, responses
from migration_guard.api.models.custom_model import CustomModelBody, CustomModelRequest
from migration_guard.service.guard import GuardService

DEFAULT_NAME = "cluster-baseline"


def _names(nodes: list[str] | None) -> list[str] | None:
    """The checked node names; None (every online node) when none are given."""
    names = [deps.node_name(n.strip(), "nodes") for n in nodes or () if n.strip()]
    return names or None


def router(service: GuardService, authorize: Authorize) -> APIRouter:
    api = APIRouter(dependencies=[Depends(authorize)])

    @api.get(
        "/v1/cluster/custom-model",
        response_model=None,
        responses=responses(CustomModelBody, "the custom CPU model every chosen node runs, and who gains"),
    )
    async def custom_model(
        nodes: str | None = Query(
            None, description="comma-separated node names (default: every online node)"
        ),
        name: str = Query(DEFAULT_NAME, max_length=48, description="the model's name (custom-NAME)"),
    ) -> Response:
        return json_response(await service.custom_model(_names(nodes.split(",") if nodes else None), name))

    @api.post(
        "/v1/cluster/custom-model",
        response_model=None,
        responses=responses(
            CustomModelBody, "created in Proxmox (the token needs Mapping.Modify on /mapping/cpu)"
        ),
    )
    async def create(request: CustomModelRequest) -> Response:
        return json_response(await service.create_custom_model(_names(request.nodes), request.name))

    return api
