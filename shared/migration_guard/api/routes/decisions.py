"""The hook's decisions: decide, record and announce (POST), and the audit log (GET)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from migration_guard.api import deps
from migration_guard.api.deps import VMID_PATTERN, Authorize
from migration_guard.api.errors import JSON, UNKNOWN_503, json_response, key_values, responses
from migration_guard.api.models import DecisionBody, DecisionRequest, DecisionsBody
from migration_guard.service.guard import GuardService


def router(service: GuardService, authorize: Authorize) -> APIRouter:
    api = APIRouter()
    audit = APIRouter(dependencies=[Depends(authorize)])

    @api.post(
        "/v1/decisions",
        summary="The hook's question at pre-start: decide, record and announce a veto",
        response_model=None,
        responses={
            **responses(
                DecisionBody,
                "the verdict with decision_id, exit and line (with Accept: text/plain: key=value "
                "lines verdict, code, exit, decision, line and a final end=1)",
            ),
            503: {"model": DecisionBody, "description": UNKNOWN_503},
        },
        openapi_extra={
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": DecisionRequest.model_json_schema()}},
            },
        },
    )
    async def decide(request: Request) -> Response:
        # the hook's path: the token checked by hand (FastAPI's dependency machinery costs more
        # than the rest of the route); the body is read after it: a caller without a valid token
        # gets 401 whatever it sent, never a parse error (FastAPI parses a declared body before auth)
        await authorize(request)
        try:
            decision = DecisionRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        outcome = await service.decide(decision.model_dump(), budget_s=deps.budget(request))
        body = outcome.body
        if "text/plain" in request.headers.get("accept", ""):
            text = key_values(
                {
                    "verdict": body["verdict"],
                    "code": body["code"],
                    "exit": body["exit"],
                    "decision": body["decision_id"],
                    "line": body["line"],
                }
            )
            return Response(text, status_code=outcome.status, media_type="text/plain")
        return json_response(body, outcome.status)

    @audit.get(
        "/v1/decisions",
        response_model=None,
        responses=responses(DecisionsBody, "the recorded decisions, newest first"),
    )
    async def decisions(
        limit: int = Query(50, ge=1, le=1000, description="how many, newest first"),
        vmid: str | None = Query(None, description="only this VM's decisions", pattern=VMID_PATTERN),
    ) -> Response:
        number = deps.vmid(vmid) if vmid is not None else None
        return json_response({"decisions": await service.events.recent(limit, number)})

    api.routes.extend(audit.routes)
    return api
