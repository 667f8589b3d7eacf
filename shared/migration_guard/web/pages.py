"""The dashboard's pages (read-only): the matrix, one cell's why, the cluster, the vetoes and a
node. Each shows what the JSON API answers, from the same service functions: ``matrix()``
(``GET /v1/matrix``), ``check()`` (``GET /v1/vms/{vmid}/check``), ``cluster_view()`` and
``recommendation()`` (``GET /v1/cluster``, ``/v1/cluster/recommendation``), ``custom_model()``
(``GET /v1/cluster/custom-model``), ``evacuation()`` (``GET /v1/nodes/{node}/evacuation``), the
drift events (``GET /v1/drift``), the decision log (``GET /v1/decisions``). A page without a
session sends the browser to the login form."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from migration_guard.errors import GuardError, InputError, StoreUnavailable, UnknownNodeError
from migration_guard.web.auth import LOGIN, Auth, redirect
from migration_guard.web.matrix_view import parse_query, view
from migration_guard.web.render import error_page, page
from migration_guard.web.session import Session

#: Proxmox's node name (the API's own check) and VM id (pve-vmid)
NODE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9.-]{0,62}\Z")
VMID = re.compile(r"\A[1-9][0-9]{2,8}\Z")

Handler = Callable[[Request, Session], Awaitable[Response]]
#: the custom model's name on the cluster page (GET /v1/cluster/custom-model's default)
CUSTOM_MODEL_NAME = "cluster-baseline"
#: the drift events a node page shows, newest first
DRIFT_SHOWN = 20


async def _part(answer: Awaitable[Any]) -> tuple[Any, str]:
    """(the answer, "") or (None, the operator's message): one part of a page that cannot be
    answered does not take the page down."""
    try:
        return await answer, ""
    except GuardError as exc:
        return None, str(exc)


def signed_in(auth: Auth, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` with the request's session; without one the login form; a GuardError (Proxmox
    or Redis down, an unknown VM) is the error page with the operator's message."""

    async def endpoint(request: Request) -> Response:
        try:
            session = await auth.current(request)
        except StoreUnavailable as exc:
            return error_page(exc, title="Cannot check your login: the store does not answer")
        if session is None:
            return redirect(LOGIN)
        try:
            return await handler(request, session)
        except GuardError as exc:
            return error_page(exc, session)

    return endpoint


class Pages:
    """The page handlers; ``service``: the GuardService the JSON API answers from."""

    def __init__(self, service: Any) -> None:
        self.service = service

    async def home(self, request: Request, session: Session) -> Response:
        return redirect("/ui/matrix")

    async def matrix(self, request: Request, session: Session) -> Response:
        data = await self.service.matrix()
        query = parse_query(request.query_params)
        return page(
            "matrix.html",
            session=session,
            active="matrix",
            cluster=data["cluster"],
            note=data["note"],
            checked_at=data["checked_at"],
            q=query,
            v=view(data, query),
        )

    async def why(self, request: Request, session: Session) -> Response:
        vmid, target = request.query_params.get("vmid", ""), request.query_params.get("target", "")
        if not VMID.match(vmid) or not NODE.match(target):
            raise InputError("a cell is named by vmid (like 101) and target (a node name)")
        outcome = await self.service.check(int(vmid), target)
        body = outcome.body
        template = "why_fragment.html" if request.headers.get("x-fragment") == "1" else "why.html"
        return page(template, session=session, active="matrix", v=body)

    async def cluster(self, request: Request, session: Session) -> Response:
        view_ = await self.service.cluster_view()
        # each part on its own: one that cannot be answered says why, the page shows the rest
        rec, rec_error = await _part(self.service.recommendation(None))
        custom, custom_error = await _part(self.service.custom_model(None, CUSTOM_MODEL_NAME))
        context = {"c": view_, "rec": rec, "rec_error": rec_error, "custom": custom}
        context["custom_error"] = custom_error
        return page("cluster.html", session=session, active="cluster", **context)

    async def vetoes(self, request: Request, session: Session) -> Response:
        limit_text = request.query_params.get("limit", "100")
        limit = min(int(limit_text), 1000) if limit_text.isdigit() and int(limit_text) > 0 else 100
        only = request.query_params.get("only", "deny")
        only = only if only in ("deny", "all") else "deny"
        records = await self.service.events.recent(limit)
        # a veto, or a veto an approved override let through once
        shown = [r for r in records if only == "all" or r.get("verdict") == "deny" or r.get("override")]
        return page("vetoes.html", session=session, active="vetoes", records=shown, limit=limit, only=only)

    async def node(self, request: Request, session: Session) -> Response:
        name = request.path_params["node"]
        view_ = await self.service.cluster_view()
        entry = next((n for n in view_["nodes"] if n["name"] == name), None)
        if entry is None or not NODE.match(name):
            names = ", ".join(n["name"] for n in view_["nodes"])
            raise UnknownNodeError(
                f"cluster {view_['cluster']} has no node {name[:63]!r}; its nodes are {names}"
            )
        evacuation, evacuation_error = await _part(self.service.evacuation(name))
        drift, drift_error = await _part(self.service.drift.recent(DRIFT_SHOWN, name))
        rows: list[dict] = []
        if evacuation is None:  # where each VM can go, from the matrix
            data = await self.service.matrix()
            rows = [r for r in data["vms"] if r["node"] == name]
        return page(
            "node.html",
            session=session,
            active="cluster",
            cluster=view_["cluster"],
            n=entry,
            rows=rows,
            nodes=[n["name"] for n in view_["nodes"] if n["name"] != name],
            evacuation=evacuation,
            evacuation_error=evacuation_error,
            drift=drift,
            drift_error=drift_error,
        )


def router(service: Any, auth: Auth) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    pages = Pages(service)
    routes: list[tuple[str, Handler]] = [
        ("/", pages.home),
        ("/ui", pages.home),
        ("/ui/matrix", pages.matrix),
        ("/ui/why", pages.why),
        ("/ui/cluster", pages.cluster),
        ("/ui/vetoes", pages.vetoes),
        ("/ui/nodes/{node}", pages.node),
    ]
    for path, handler in routes:
        web.add_api_route(path, signed_in(auth, handler), methods=["GET"], response_model=None)
    return web
