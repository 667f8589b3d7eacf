"""What if: the shipped CPUs an imagined node may have (GET /v1/cpus) and the recommendation for
the cluster with nodes added as host data (POST /v1/cluster/recommendation; the GET form with
``add``/``remove`` is in routes/cluster.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from migration_guard.api import deps
from migration_guard.api.deps import Authorize
from migration_guard.api.errors import JSON, json_response, responses
from migration_guard.api.models.whatif import CpusBody, RecommendationWhatIfBody, WhatIfRequest
from migration_guard.engine.cpus import shipped_cpus
from migration_guard.service.guard import GuardService

SCHEMA = WhatIfRequest.model_json_schema()


def cpus_body() -> dict:
    return {"cpus": [c.as_dict() for c in shipped_cpus()]}


def router(service: GuardService, authorize: Authorize) -> APIRouter:
    api = APIRouter(dependencies=[Depends(authorize)])

    @api.get(
        "/v1/cpus",
        response_model=None,
        responses=responses(CpusBody, "the real CPUs an imagined node of a what-if question may have"),
    )
    async def cpus() -> Response:
        return json_response(cpus_body())

    @api.post(
        "/v1/cluster/recommendation",
        summary="What if: the recommendation with nodes added (shipped CPUs or host data) or removed",
        response_model=None,
        responses=responses(
            RecommendationWhatIfBody, "the recommendation now, and what_if: after the change"
        ),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": WhatIfRequest.model_json_schema()}},
            }
        },
    )
    async def what_if(request: Request) -> Response:
        try:
            ask = WhatIfRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        names = [deps.node_name(n, "nodes") for n in ask.nodes] if ask.nodes else None
        remove = [deps.node_name(n, "remove") for n in ask.remove]
        hosts = [h.model_dump(exclude_none=True) for h in ask.hosts]
        body = await service.recommendation(names, add=ask.add, remove=remove, host_data=hosts)
        return json_response(body)

    return api
