"""The HTTP API of the compatibility service (FastAPI). Thin routes: the logic is in
shared/service.py (facts) and shared/checks.py (verdicts).

Every /v1 path needs ``Authorization: Bearer <token>``. Errors are JSON
``{"error": {"code", "message"}}`` (or key=value lines for ``Accept: text/plain`` on
POST /v1/decisions, the hookscript's contract); never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
from typing import Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import (
    GuardError,
    InputError,
    NotFoundError,
    ProxmoxError,
    ProxmoxUnreachable,
    StoreUnavailable,
)
from .metrics import CONTENT_TYPE
from .refresher import InventoryRefresher
from .service import GuardService

log = logging.getLogger("migration_guard.api")

NODE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$")
JSON = "application/json"


class AuthError(GuardError):
    code = "unauthorized"


def _dumps(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(body: object, status: int = 200, headers: dict | None = None) -> Response:
    return Response(_dumps(body), status_code=status, media_type=JSON, headers=headers)


def status_of(exc: GuardError) -> int:
    if isinstance(exc, AuthError):
        return 401
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, InputError):
        return 422
    if isinstance(exc, (ProxmoxUnreachable, StoreUnavailable)):
        return 503
    if isinstance(exc, ProxmoxError):
        return 502
    return 500


def _wants_text(request: Request) -> bool:
    return request.url.path == "/v1/decisions" and "text/plain" in request.headers.get("accept", "")


def _key_values(pairs: dict) -> str:
    """``key=value`` lines (values on one line) and a final ``end=1``: the hook trusts only an
    answer that ends with it, so a cut answer is never read as a decision."""
    lines = "".join(f"{k}={' '.join(str('' if v is None else v).split())}\n" for k, v in pairs.items())
    return lines + "end=1\n"


def error_response(
    request: Request, status: int, code: str, message: str, field: str | None = None
) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if _wants_text(request):
        text = _key_values({"verdict": "unknown", "code": code, "exit": 5, "decision": "", "line": message})
        return Response(text, status_code=status, media_type="text/plain", headers=headers)
    error: dict = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return json_response({"error": error}, status, headers)


class DecisionRequest(BaseModel):
    vmid: int = Field(ge=1, le=999_999_999)
    target: str
    source: str | None = None
    mode: Literal["enforce", "warn"] = "enforce"
    smbios_uuid: str | None = Field(default=None, max_length=64)
    cpu: str | None = Field(default=None, max_length=1024)
    remote: bool | None = None
    #: cross-cluster (issue 6): the clusters of each side (default: the service's default cluster)
    source_cluster: str | None = Field(default=None, max_length=63)
    target_cluster: str | None = Field(default=None, max_length=63)
    vmgenid: str | None = Field(default=None, max_length=64)
    #: the hook's policy for a remote migration whose source the service cannot read: with "deny"
    #: it blocks such a migration, so the decision is recorded and announced as a veto
    remote_unknown: Literal["deny", "allow"] | None = None

    @field_validator("target", "source", "source_cluster", "target_cluster")
    @classmethod
    def _node(cls, value: str | None) -> str | None:
        if value is not None and not NODE_NAME.match(value):
            raise ValueError(f"{value[:70]!r} is not a Proxmox node name")
        return value


class FieldError(InputError):
    """Malformed input in one named field (HTTP 422 with ``field``)."""

    code = "bad-input"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _node_name(value: str, field: str) -> str:
    if not NODE_NAME.match(value):
        raise FieldError(field, f"{field}: {value[:70]!r} is not a Proxmox node name")
    return value


def _vmid(text: str) -> int:
    try:
        vmid = int(text)
    except ValueError:
        raise FieldError("vmid", f"vmid: {text[:30]!r} is not a VM id (a number like 101)") from None
    if not 1 <= vmid <= 999_999_999:
        raise FieldError("vmid", f"vmid: {vmid} is out of range (1 to 999999999)")
    return vmid


def create_app(service: GuardService, tokens: tuple[str, ...], *, refresh: bool = False) -> FastAPI:
    """The HTTP API. ``refresh``: read every cluster's nodes and VM list at start-up, before the
    app takes requests, and keep them fresh in the background while it runs (``serve`` turns it
    on per MIGRATION_GUARD_INVENTORY_REFRESH)."""
    token_bytes = tuple(t.encode() for t in tokens if t)

    async def flusher() -> None:
        """Write events queued while Redis was down as soon as it is back."""
        while True:
            await asyncio.sleep(1.0)
            try:
                if service.events.pending:
                    await service.events.flush()
            except Exception:  # noqa: BLE001 - the loop must survive; the next round retries
                log.exception("flushing queued events failed")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        tasks = [asyncio.create_task(flusher())]
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

    app = FastAPI(title="migration-guard", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service

    async def authorize(request: Request) -> None:  # async: no thread hop per request
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise AuthError(
                "this API needs Authorization: Bearer <token> (one of MIGRATION_GUARD_API_TOKENS)"
            )
        given_b = given.strip().encode()
        ok = False
        for token in token_bytes:  # compare with every token: the time does not tell which one
            ok |= hmac.compare_digest(given_b, token)
        if not ok:
            raise AuthError("the bearer token is not one of MIGRATION_GUARD_API_TOKENS")

    auth = [Depends(authorize)]

    # --- errors ----------------------------------------------------------------------------

    @app.exception_handler(GuardError)
    async def guard_error(request: Request, exc: GuardError) -> Response:
        return error_response(request, status_of(exc), exc.code, str(exc), getattr(exc, "field", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = ".".join(loc) or "body"
        message = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
        return error_response(request, 422, "bad-input", f"{field}: {message}", field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such path {request.url.path}"
        return error_response(request, exc.status_code, code, message)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("internal error answering %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(
            request, 500, "internal", "internal error in migration-guard; the service log has the details"
        )

    # --- routes ------------------------------------------------------------------------------

    # first: the router tries routes in order, and this is the one asked most
    @app.get("/v1/vms/{vmid}/check")
    async def check(request: Request) -> Response:
        # the hot path: auth and parameters by hand (FastAPI's dependency and Query machinery
        # costs more than the warm check itself); same errors as the other routes
        await authorize(request)
        target = request.query_params.get("target")
        if not target:
            raise FieldError("target", "target: the target node is required, e.g. ?target=pve2")
        vmid, target = _vmid(request.path_params["vmid"]), _node_name(target, "target")
        clusters = request.query_params.get("target_cluster"), request.query_params.get("source_cluster")
        if any(clusters):  # cross-cluster (issue 6)
            target_cluster = _node_name(clusters[0], "target_cluster") if clusters[0] else None
            source_cluster = _node_name(clusters[1], "source_cluster") if clusters[1] else None
            outcome = await service.across().check(vmid, target, target_cluster, source_cluster)
        else:
            outcome = await service.check(vmid, target)
        return Response(outcome.json_bytes(), status_code=outcome.status, media_type=JSON)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    async def reach(one: GuardService) -> str:
        """"" when the cluster's API answers the node list in time, else why not."""
        try:
            await asyncio.wait_for(one._run(one.reader.nodes), one.settings.pve_timeout + 1)
        except (TimeoutError, GuardError) as exc:
            return str(exc) or "no answer in time"
        return ""

    @app.get("/readyz")
    async def readyz() -> Response:
        # the other clusters of MIGRATION_GUARD_CLUSTERS_FILE: one down degrades, it does not
        # make the service unready (the nodes of this cluster still get their answers)
        others = [s for s in service.across().services.values() if s is not service]
        redis_ok, detail, *other_errors = await asyncio.gather(
            service.store.ping(), reach(service), *(reach(s) for s in others)
        )
        proxmox = "unreachable" if detail else "ok"
        others_down = any(other_errors)
        body: dict[str, object] = {
            "status": "ready"
            if proxmox == "ok" and redis_ok and not others_down
            else ("degraded" if proxmox == "ok" else "unready"),
            "degraded": not redis_ok or others_down,
            "store": service.store.kind,
            "redis": "ok" if redis_ok else "down",
            "proxmox": proxmox,
            "events_pending": service.events.pending,
        }
        if not redis_ok:
            body["redis_error"] = service.store.last_error
        if detail:
            body["proxmox_error"] = detail
        if others:
            body["clusters"] = {
                s.cluster: f"unreachable: {error}" if error else "ok"
                for s, error in zip(others, other_errors, strict=True)
            }
        return json_response(body, 200 if proxmox == "ok" else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/vms/{vmid}/targets", dependencies=auth)
    async def targets(vmid: int, all_clusters: bool = False, source_cluster: str | None = None) -> Response:
        if all_clusters or source_cluster:  # every cluster the service reads (issue 6)
            name = _node_name(source_cluster, "source_cluster") if source_cluster else None
            return json_response(await service.across().targets(vmid, name))
        return json_response(await service.targets(vmid))

    @app.post(
        "/v1/decisions",
        dependencies=auth,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": DecisionRequest.model_json_schema()}},
            }
        },
    )
    async def decide(request: Request) -> Response:
        # the body is read here, after the token check: a caller without a valid token gets 401
        # whatever it sent, never a parse error (FastAPI parses a declared body before auth)
        try:
            decision = DecisionRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        outcome = await service.decide(decision.model_dump())
        body = outcome.body
        if "text/plain" in request.headers.get("accept", ""):
            text = _key_values(
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

    @app.get("/v1/decisions", dependencies=auth)
    async def decisions(
        limit: int = Query(50, ge=1, le=1000), vmid: int | None = Query(None, ge=1)
    ) -> Response:
        return json_response({"decisions": await service.events.recent(limit, vmid)})

    @app.get("/v1/cluster", dependencies=auth)
    async def cluster() -> Response:
        return json_response(await service.cluster_view())

    @app.get("/v1/cluster/recommendation", dependencies=auth)
    async def recommendation(nodes: str | None = None) -> Response:
        names = [_node_name(n.strip(), "nodes") for n in nodes.split(",") if n.strip()] if nodes else None
        return json_response(await service.recommendation(names))

    @app.get("/v1/matrix", dependencies=auth)
    async def matrix() -> Response:
        return json_response(await service.matrix())

    return app
