"""The HTTP API of the compatibility service (FastAPI): the app factory, its lifespan (the
inventory refresher, the queued-events flusher), the body limit, and the routers of
shared/migration_guard/api/routes/ (checks, decisions, cluster, health). The logic is in
shared/migration_guard/service/ (facts, reports) and shared/migration_guard/engine/ (verdicts).

Every /v1 path needs ``Authorization: Bearer <token>`` (api/deps.py). Errors are JSON
``{"error": {"code", "message"}}`` (or key=value lines for ``Accept: text/plain`` on
POST /v1/decisions, the hookscript's contract), mapped once in api/errors.py; never a traceback.
The answers' shapes are the models of api/models/, documented in GET /openapi.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from migration_guard import web
from migration_guard.api import errors
from migration_guard.api.deps import bearer
from migration_guard.api.errors import JSON, TEXT_PATH, dumps, unknown_text
from migration_guard.api.routes import (
    checks,
    cluster,
    coverage,
    custom_model,
    decisions,
    drift,
    evacuation,
    ha,
    health,
    matrix,
    node_kit,
    overrides,
    whatif,
)
from migration_guard.service.guard import GuardService
from migration_guard.service.refresher import InventoryRefresher

log = logging.getLogger("migration_guard.api")


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413 before reading past the limit, on every
    route and before any token check: a declared Content-Length over the limit is refused unread; a
    chunked (or under-declared) body is read only up to the limit. A body within the limit is
    handed to the app whole."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = chunked = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = value
        if length is None and chunked is None:  # no body (every GET the hook and the bot send)
            await self.app(scope, receive, send)
            return
        if length is not None and (not length.strip().isdigit() or int(length) > self.limit):
            await self._refuse(scope, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(scope, send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict, send: Any) -> None:
        path = scope.get("path", "")
        log.warning("refused a request body over %d bytes on %s", self.limit, path)
        message = (
            f"the request body is larger than {self.limit} bytes "
            "(MIGRATION_GUARD_MAX_BODY_BYTES); nothing was read or done"
        )
        accept = b""
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value
        if path == TEXT_PATH and b"text/plain" in accept:
            body, ctype = unknown_text("too-large", message).encode(), b"text/plain; charset=utf-8"
        else:
            body, ctype = dumps({"error": {"code": "too-large", "message": message}}), JSON.encode()
        headers = [
            (b"content-type", ctype),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # the unread rest of the body is not waited for
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _flush_events(service: GuardService) -> None:
    """Write events queued while Redis was down as soon as it is back."""
    while True:
        await asyncio.sleep(1.0)
        try:
            if service.events.pending:
                await service.events.flush()
        except Exception:  # noqa: BLE001 - the loop must survive; the next round retries
            log.exception("flushing queued events failed")


def _lifespan(service: GuardService, refresh: bool) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_flush_events(service))]
        if refresh:  # every cluster the service reads (MIGRATION_GUARD_CLUSTERS_FILE too)
            refreshers = [InventoryRefresher(one) for one in service.across().services.values()]
            # the inventory is read before the service listens: its first check is as quick as
            # any later one (one round trip for the VM's own facts)
            await asyncio.gather(*(r.first_round() for r in refreshers))
            tasks += [asyncio.create_task(r.run(after_first=True)) for r in refreshers]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await service.close()

    return lifespan


def create_app(service: GuardService, tokens: tuple[str, ...], *, refresh: bool = False) -> FastAPI:
    """The HTTP API. ``refresh``: read every cluster's nodes and VM list at start-up, before the
    app takes requests, and keep them fresh in the background while it runs (``serve`` turns it
    on per MIGRATION_GUARD_INVENTORY_REFRESH)."""
    app = FastAPI(
        title="migration-guard",
        version="1",
        lifespan=_lifespan(service, refresh),
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, limit=service.settings.max_body_bytes)
    authorize = bearer(tokens)
    # checks first: the router tries routes in order, and the verdict is the one asked most. The
    # routes are the app's own, not an included router: a nested router costs the hot check
    # about 30% more Python calls per request (FastAPI 0.165 matches through each included one)
    for resource in (
        checks,
        health,
        decisions,
        cluster,
        matrix,
        custom_model,
        overrides,
        evacuation,
        ha,
        node_kit,
        coverage,
        whatif,
        drift,
    ):
        app.router.routes.extend(resource.router(service, authorize).routes)
    web.install(app, service, tokens)  # the dashboard (/ui/...) and the API docs (/docs)
    errors.install(app, app.routes)
    return app
