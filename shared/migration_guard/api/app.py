"""The HTTP API of the compatibility service (FastAPI). Thin routes: the logic is in
shared/migration_guard/service/guard.py (facts) and shared/migration_guard/engine/checks.py (verdicts).

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
import time
from typing import Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from migration_guard.errors import (
    GuardError,
    InputError,
    NotFoundError,
    ProxmoxError,
    ProxmoxUnreachable,
    StoreUnavailable,
)
from migration_guard.service.guard import GuardService
from migration_guard.service.metrics import CONTENT_TYPE
from migration_guard.service.refresher import InventoryRefresher

log = logging.getLogger("migration_guard.api")

#: the whole value, \A...\Z: ``$`` would let a trailing newline through
NODE_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9.-]{0,62}\Z")
#: a VM id as Proxmox writes it: ASCII digits only (no sign, underscore, dot or other scripts' digits)
DIGITS = re.compile(r"\A[0-9]+\Z")
#: Proxmox's VM id (pve-common PVE/JSONSchema.pm, format pve-vmid): 100 to 999999999, no leading zero
VMID_PATTERN = "^[1-9][0-9]{2,8}$"
VMID = re.compile(r"\A[1-9][0-9]{2,8}\Z")
VMID_RULE = "a JSON integer or ASCII digits, 100 to 999999999, no leading zero, like 101"
VMID_TEXT = "the VM id: ASCII digits, 100 to 999999999, no leading zero (Proxmox's pve-vmid)"
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
    #: strict: a JSON integer only (not true, 101.0 or "101"); 100 to 999999999 as Proxmox's
    #: pve-vmid format (pve-common PVE/JSONSchema.pm)
    vmid: int = Field(ge=100, le=999_999_999, strict=True)
    target: str
    source: str | None = None
    mode: Literal["enforce", "warn"] = "enforce"
    smbios_uuid: str | None = Field(default=None, max_length=64)
    cpu: str | None = Field(default=None, max_length=1024)
    #: cross-cluster (issue 6): the clusters of each side (default: the service's default cluster)
    source_cluster: str | None = Field(default=None, max_length=63)
    target_cluster: str | None = Field(default=None, max_length=63)

    @field_validator("target", "source", "source_cluster", "target_cluster")
    @classmethod
    def _node(cls, value: str | None) -> str | None:
        if value is not None and not NODE_NAME.match(value):
            raise ValueError(f"{value[:70]!r} is not a Proxmox node name")
        return value


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {"code", "message"[, "field"]}}``."""

    error: ErrorDetail


def _errors(*statuses: int, ok: str = "") -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of the error answers a route can give (and ``ok``: its 200)."""
    what = {
        401: "no or a wrong bearer token (MIGRATION_GUARD_API_TOKENS)",
        404: "no such VM, node, cluster or path",
        405: "method not allowed (the Allow header names the methods)",
        413: "the request body is larger than MIGRATION_GUARD_MAX_BODY_BYTES",
        422: "malformed input; error.field names the parameter",
        500: "internal error (the service log has the details)",
        502: "Proxmox refused the service's token (auth, permission) or answered nonsense",
        503: "Proxmox or Redis unreachable; a check answers verdict unknown",
    }
    out: dict[int | str, dict[str, Any]] = {200: {"description": ok}} if ok else {}
    out.update({status: {"model": ErrorBody, "description": what[status]} for status in statuses})
    return out


#: the errors every /v1 route can answer
V1_ERRORS = (401, 404, 405, 413, 422, 500, 502, 503)


def _query(name: str, description: str, *, required: bool = False, schema: dict | None = None) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_VMID_PATH = {
    "name": "vmid",
    "in": "path",
    "required": True,
    "description": VMID_TEXT,
    "schema": {"type": "string", "pattern": VMID_PATTERN},
}
_NODE_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$"}


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


#: the hookscript's time left for its answer, in milliseconds (the service answers before it)
BUDGET_HEADER = "X-Migration-Guard-Budget-Ms"


def _budget(request: Request) -> float | None:
    """Seconds the caller still waits (``X-Migration-Guard-Budget-Ms``); None without the header
    or with a value that is not a positive number of milliseconds (then it is ignored)."""
    raw = request.headers.get(BUDGET_HEADER)
    if not raw:
        return None
    try:
        ms = float(raw)
    except ValueError:
        return None
    return ms / 1000 if 0 < ms <= 600_000 else None


def _vmid(text: str) -> int:
    if not DIGITS.match(text):
        raise FieldError("vmid", f"vmid: {text[:30]!r} is not a VM id (ASCII digits, like 101)")
    if not VMID.match(text):
        raise FieldError(
            "vmid", f"vmid: {text[:30]} is not a Proxmox VM id (100 to 999999999, no leading zero)"
        )
    return int(text)


def _methods_of(app: FastAPI, path: str) -> list[str]:
    methods: set[str] = set()
    for route in app.routes:
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(path):
            methods |= set(route_methods)
    return sorted(methods)


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
        if path == "/v1/decisions" and b"text/plain" in accept:
            fields = {"verdict": "unknown", "code": "too-large", "exit": 5, "decision": "", "line": message}
            body, ctype = _key_values(fields).encode(), b"text/plain; charset=utf-8"
        else:
            body, ctype = _dumps({"error": {"code": "too-large", "message": message}}), JSON.encode()
        headers = [
            (b"content-type", ctype),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # the unread rest of the body is not waited for
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


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
    app.add_middleware(BodyLimit, limit=service.settings.max_body_bytes)

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
        if field == "vmid" and first.get("type") != "missing":  # what to type, not the schema's rule
            given = first.get("input")
            shown = repr(given[:30]) if isinstance(given, str) else json.dumps(given)[:30]
            message = f"{shown} is not a Proxmox VM id ({VMID_RULE})"
        return error_response(request, 422, "bad-input", f"{field}: {message}", field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such path {request.url.path}"
        allowed = ""
        if exc.status_code == 405:  # Allow: every method of every route of this path
            allowed = ", ".join(_methods_of(app, request.url.path))
            message = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
        response = error_response(request, exc.status_code, code, message)
        if allowed:
            response.headers["Allow"] = allowed
        return response

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("internal error answering %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(
            request, 500, "internal", "internal error in migration-guard; the service log has the details"
        )

    # --- routes ------------------------------------------------------------------------------

    # first: the router tries routes in order, and this is the one asked most
    @app.get(
        "/v1/vms/{vmid}/check",
        summary="Can the VM live-migrate to the target node?",
        responses=_errors(*V1_ERRORS, ok="the verdict (allow, deny or unknown) with its reasons"),
        openapi_extra={
            "security": [{"bearer": []}],
            "parameters": [
                _VMID_PATH,
                _query("target", "the target node", required=True, schema=_NODE_SCHEMA),
                _query("target_cluster", "the target's cluster (cross-cluster)", schema=_NODE_SCHEMA),
                _query("source_cluster", "the VM's cluster (cross-cluster)", schema=_NODE_SCHEMA),
            ],
        },
    )
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

    ready_cache: list = [0.0, None]  # [monotonic expiry, (body, status)]
    ready_lock = asyncio.Lock()

    async def readiness() -> tuple[dict, int]:
        """Redis and every cluster's API asked once per MIGRATION_GUARD_READYZ_CACHE_S: a load
        balancer polling /readyz does not call Proxmox on each poll."""
        async with ready_lock:  # one probe at a time; the polls meanwhile share its answer
            now = time.monotonic()
            if ready_cache[1] is not None and now < ready_cache[0]:
                return ready_cache[1]
            answer = await probe()
            ready_cache[:] = [time.monotonic() + service.settings.readyz_cache_s, answer]
            return answer

    async def probe() -> tuple[dict, int]:
        # the other clusters of MIGRATION_GUARD_CLUSTERS_FILE: one down degrades, it does not
        # make the service not ready (the nodes of this cluster still get their answers)
        others = [s for s in service.across().services.values() if s is not service]
        redis_ok, detail, *other_errors = await asyncio.gather(
            service.store.ping(), reach(service), *(reach(s) for s in others)
        )
        proxmox = "unreachable" if detail else "ok"
        others_down = any(other_errors)
        body: dict[str, object] = {
            "status": "ready"
            if proxmox == "ok" and redis_ok and not others_down
            else ("degraded" if proxmox == "ok" else "not ready"),
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
        return body, 200 if proxmox == "ok" else 503

    @app.get(
        "/readyz",
        responses={
            200: {"description": "ready or degraded; the details only with a valid bearer token"},
            503: {"description": "not ready: this cluster's Proxmox API does not answer"},
        },
    )
    async def readyz(request: Request) -> Response:
        body, status = await readiness()
        try:
            await authorize(request)
        except AuthError:  # without the token: the state only, no hosts, token ids or errors
            return json_response({"status": body["status"]}, status)
        return json_response({**body, "events_pending": service.events.pending}, status)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/vms/{vmid}/targets", dependencies=auth, responses=_errors(*V1_ERRORS))
    async def targets(
        vmid: str = Path(description=VMID_TEXT, pattern=VMID_PATTERN),
        all_clusters: bool = Query(False, description="every cluster the service reads"),
        source_cluster: str | None = Query(None, description="the VM's cluster (cross-cluster)"),
    ) -> Response:
        number = _vmid(vmid)
        if all_clusters or source_cluster:  # every cluster the service reads (issue 6)
            name = _node_name(source_cluster, "source_cluster") if source_cluster else None
            return json_response(await service.across().targets(number, name))
        return json_response(await service.targets(number))

    @app.post(
        "/v1/decisions",
        dependencies=auth,
        summary="The hook's question at pre-start: decide, record and announce a veto",
        responses=_errors(*V1_ERRORS, ok="the verdict with decision_id, exit and line"),
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
        outcome = await service.decide(decision.model_dump(), budget_s=_budget(request))
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

    @app.get("/v1/decisions", dependencies=auth, responses=_errors(*V1_ERRORS))
    async def decisions(
        limit: int = Query(50, ge=1, le=1000, description="how many, newest first"),
        vmid: str | None = Query(None, description="only this VM's decisions", pattern=VMID_PATTERN),
    ) -> Response:
        number = _vmid(vmid) if vmid is not None else None
        return json_response({"decisions": await service.events.recent(limit, number)})

    @app.get("/v1/cluster", dependencies=auth, responses=_errors(*V1_ERRORS))
    async def cluster() -> Response:
        return json_response(await service.cluster_view())

    @app.get("/v1/cluster/recommendation", dependencies=auth, responses=_errors(*V1_ERRORS))
    async def recommendation(
        nodes: str | None = Query(None, description="comma-separated node names (default: every online node)")
    ) -> Response:
        names = [_node_name(n.strip(), "nodes") for n in nodes.split(",") if n.strip()] if nodes else None
        return json_response(await service.recommendation(names))

    @app.get("/v1/matrix", dependencies=auth, responses=_errors(*V1_ERRORS))
    async def matrix() -> Response:
        return json_response(await service.matrix())

    return app
