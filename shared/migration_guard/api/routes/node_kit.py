"""The node kit: what a Proxmox node needs to run and install the hook, from the service itself."""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from migration_guard.api.deps import Authorize
from migration_guard.api.errors import json_response, responses
from migration_guard.api.models.node_kit import NodeKitManifest
from migration_guard.errors import InputError
from migration_guard.service import node_kit
from migration_guard.service.guard import GuardService

#: what the kit writes into hook.conf and its own comments: a plain http(s) base URL, nothing else
_URL = re.compile(
    r"\Ahttps?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?\Z|\Ahttps?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?\Z"
)
SHELL = "text/x-shellscript; charset=utf-8"


def router(service: GuardService, authorize: Authorize) -> APIRouter:
    api = APIRouter(dependencies=[Depends(authorize)])
    ok = responses(
        NodeKitManifest, "the kit: a POSIX shell script (text/x-shellscript); its manifest as JSON"
    )
    ok[200]["content"] = {"text/x-shellscript": {"schema": {"type": "string"}}}

    @api.get("/v1/node-kit", response_model=None, responses=ok)
    async def kit(request: Request) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            return json_response(node_kit.manifest())
        url = str(request.base_url).rstrip("/")
        if not _URL.match(url):
            raise InputError(
                f"the service's URL as this request reached it ({url!r}) cannot go into a node's config"
            )
        token = request.headers.get("authorization", "").partition(" ")[2].strip()
        return Response(node_kit.script(url, token), media_type=SHELL, headers={"Cache-Control": "no-store"})

    return api
