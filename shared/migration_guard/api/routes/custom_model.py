"""The cluster's best custom CPU model: computed (GET), or created in Proxmox (POST)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from migration_guard.api import deps
from migration_guard.api.deps import Authorize
from migration_guard.api.errors import JSON, json_response, responses
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
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": CustomModelRequest.model_json_schema()}},
            }
        },
    )
    async def create(request: Request) -> Response:
        # the body is read here, after the token check: a caller without a valid token gets 401
        # whatever it sent, never a parse error (FastAPI parses a declared body before auth)
        try:
            asked = CustomModelRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        return json_response(await service.create_custom_model(_names(asked.nodes), asked.name))

    return api
