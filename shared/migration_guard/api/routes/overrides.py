"""Audited one-time overrides: request, approve, reject, list."""

from __future__ import annotations

from typing import TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from migration_guard.api.deps import Authorize
from migration_guard.api.errors import V1_ERRORS, json_response, responses
from migration_guard.api.models.overrides import (
    OverrideApproval,
    OverrideBody,
    OverrideRejection,
    OverrideRequest,
    OverridesBody,
)
from migration_guard.service.guard import GuardService

#: an override id as the service makes them (a ULID: 26 Crockford base32 characters)
OVERRIDE_ID = "^[0-9A-HJKMNP-TV-Z]{26}$"
#: approve/reject: every /v1 error, and 409 for a state that forbids it
_STATE = (*V1_ERRORS, 409)
M = TypeVar("M", bound=BaseModel)


async def _body(request: Request, model: type[M]) -> M:
    """The request body as ``model``, read after the token check (a caller without a valid token
    gets 401 whatever it sent; FastAPI would parse a declared body first)."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _schema(model: type[BaseModel]) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def router(service: GuardService, authorize: Authorize) -> APIRouter:
    api = APIRouter(dependencies=[Depends(authorize)])

    @api.post(
        "/v1/overrides",
        summary="Ask that one denied migration pass (pending until a second person approves)",
        response_model=None,
        responses=responses(OverrideBody, "the pending override"),
        openapi_extra=_schema(OverrideRequest),
    )
    async def request(request: Request) -> Response:
        body = await _body(request, OverrideRequest)
        return json_response(
            await service.request_override(body.vmid, body.target, body.reason, body.ttl_s, body.requested_by)
        )

    @api.post(
        "/v1/overrides/{override_id}/approve",
        summary="Approve an override (409 for its own requester, or when expired, spent or rejected)",
        response_model=None,
        responses=responses(OverrideBody, "the approved override", *_STATE),
        openapi_extra=_schema(OverrideApproval),
    )
    async def approve(
        request: Request, override_id: str = Path(pattern=OVERRIDE_ID, description="the override's id")
    ) -> Response:
        body = await _body(request, OverrideApproval)
        return json_response(await service.overrides.approve(override_id, body.approved_by))

    @api.post(
        "/v1/overrides/{override_id}/reject",
        summary="Reject (withdraw) a pending or approved override",
        response_model=None,
        responses=responses(OverrideBody, "the rejected override", *_STATE),
        openapi_extra=_schema(OverrideRejection),
    )
    async def reject(
        request: Request, override_id: str = Path(pattern=OVERRIDE_ID, description="the override's id")
    ) -> Response:
        body = await _body(request, OverrideRejection)
        return json_response(await service.overrides.reject(override_id, body.rejected_by))

    @api.get(
        "/v1/overrides",
        response_model=None,
        responses=responses(OverridesBody, "the overrides, newest first"),
    )
    async def overrides(
        limit: int = Query(100, ge=1, le=1000, description="how many, newest first"),
    ) -> Response:
        return json_response({"overrides": await service.overrides.overrides(limit)})

    return api
