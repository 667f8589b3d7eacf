"""Every VM against every other node (``GET /v1/matrix``), in full or compact form. Serialised
with orjson: 10,000 VMs x 64 nodes are 630,000 cells (35 MB in the full form), which the
standard json module takes a second to write."""

from __future__ import annotations

from typing import Literal

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from migration_guard.api.deps import Authorize
from migration_guard.api.errors import JSON, responses
from migration_guard.api.models.matrix import MatrixAnswer
from migration_guard.service.guard import GuardService


def router(service: GuardService, authorize: Authorize) -> APIRouter:
    api = APIRouter(dependencies=[Depends(authorize)])

    @api.get(
        "/v1/matrix",
        response_model=None,
        responses=responses(MatrixAnswer, "every VM's verdict against every other node"),
    )
    async def matrix(
        format: Literal["full", "compact"] = Query(  # noqa: A002 - the query parameter's name
            "full",
            description="compact: the distinct cells once in `cells`, each row's targets as indexes "
            "into it, one per node of `nodes` (for big clusters)",
        ),
    ) -> Response:
        body = await service.matrix(compact=format == "compact")
        return Response(orjson.dumps(body), media_type=JSON)

    return api
