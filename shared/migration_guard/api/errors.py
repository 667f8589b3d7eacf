"""The API's one error mapping: a GuardError (or a framework error) becomes an HTTP status and the
JSON error body ``{"error": {"code", "message"[, "field"]}}``, or, for ``Accept: text/plain`` on
POST /v1/decisions (the hookscript's contract), key=value lines ending with ``end=1``. Never a
traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute

from migration_guard.api.models import ErrorBody
from migration_guard.errors import (
    ConflictError,
    GuardError,
    InputError,
    NotFoundError,
    ProxmoxError,
    ProxmoxUnreachable,
    StoreUnavailable,
)

log = logging.getLogger("migration_guard.api")

JSON = "application/json"
#: the path whose callers (the hook) may ask for key=value text instead of JSON
TEXT_PATH = "/v1/decisions"
VMID_RULE = "a JSON integer or ASCII digits, 100 to 999999999, no leading zero, like 101"


class AuthError(GuardError):
    code = "unauthorized"


class FieldError(InputError):
    """Malformed input in one named field (HTTP 422 with ``field``)."""

    code = "bad-input"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def dumps(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(body: object, status: int = 200, headers: dict | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type=JSON, headers=headers)


def key_values(pairs: dict) -> str:
    """``key=value`` lines (values on one line) and a final ``end=1``: the hook trusts only an
    answer that ends with it, so a cut answer is never read as a decision."""
    lines = "".join(f"{k}={' '.join(str('' if v is None else v).split())}\n" for k, v in pairs.items())
    return lines + "end=1\n"


def unknown_text(code: str, message: str) -> str:
    """The hook's text answer for an error: no verdict (unknown, exit 5) and why."""
    return key_values({"verdict": "unknown", "code": code, "exit": 5, "decision": "", "line": message})


def status_of(exc: GuardError) -> int:
    if isinstance(exc, AuthError):
        return 401
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, InputError):
        return 422
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, (ProxmoxUnreachable, StoreUnavailable)):
        return 503
    if isinstance(exc, ProxmoxError):
        return 502
    return 500


def _wants_text(request: Request) -> bool:
    return request.url.path == TEXT_PATH and "text/plain" in request.headers.get("accept", "")


def error_response(
    request: Request, status: int, code: str, message: str, field: str | None = None
) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if _wants_text(request):
        text = unknown_text(code, message)
        return Response(text, status_code=status, media_type="text/plain", headers=headers)
    error: dict = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return json_response({"error": error}, status, headers)


#: what each error status of the API means (the OpenAPI descriptions)
ERROR_MEANING = {
    401: "no or a wrong bearer token (MIGRATION_GUARD_API_TOKENS)",
    404: "no such VM, node, cluster or path",
    405: "method not allowed (the Allow header names the methods)",
    409: "the override's state forbids it (self-approval, expired, spent); error.code says which",
    413: "the request body is larger than MIGRATION_GUARD_MAX_BODY_BYTES",
    422: "malformed input; error.field names the parameter",
    500: "internal error (the service log has the details)",
    502: "Proxmox refused the service's token (auth, permission) or answered nonsense",
    503: "Proxmox or Redis unreachable; a check answers verdict unknown",
}
#: a check or decision while Proxmox does not answer: 503 with the verdict unknown and the reason
UNKNOWN_503 = "Proxmox unreachable: the verdict unknown, with the reason (a verdict body, not an error)"
#: the errors every /v1 route can answer
V1_ERRORS = (401, 404, 405, 413, 422, 500, 502, 503)


def responses(ok: type, description: str, *statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route: its 200 (model ``ok``) and the error answers it gives
    (every /v1 error when none are named)."""
    out: dict[int | str, dict[str, Any]] = {200: {"model": ok, "description": description}}
    for status in statuses or V1_ERRORS:
        out[status] = {"model": ErrorBody, "description": ERROR_MEANING[status]}
    return out


def _methods_of(routes: Sequence[BaseRoute], path: str) -> list[str]:
    methods: set[str] = set()
    for route in routes:
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(path):
            methods |= set(route_methods)
    return sorted(methods)


async def guard_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GuardError)
    return error_response(request, status_of(exc), exc.code, str(exc), getattr(exc, "field", None))


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = ".".join(loc) or "body"
    message = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
    if field == "vmid" and first.get("type") != "missing":  # what to type, not the schema's rule
        given = first.get("input")
        shown = repr(given[:30]) if isinstance(given, str) else json.dumps(given)[:30]
        message = f"{shown} is not a Proxmox VM id ({VMID_RULE})"
    return error_response(request, 422, "bad-input", f"{field}: {message}", field)


def _http_error(routes: Sequence[BaseRoute]) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such path {request.url.path}"
        allowed = ""
        if exc.status_code == 405:  # Allow: every method of every route of this path
            allowed = ", ".join(_methods_of(routes, request.url.path))
            message = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
        response = error_response(request, exc.status_code, code, message)
        if allowed:
            response.headers["Allow"] = allowed
        return response

    return http_error


async def internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error answering %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        request, 500, "internal", "internal error in migration-guard; the service log has the details"
    )


def install(app: FastAPI, routes: Sequence[BaseRoute]) -> None:
    """Every error of ``app`` answered through this mapping; ``routes``: every route of the app
    (a 405 names their methods for the path in its Allow header)."""
    app.add_exception_handler(GuardError, guard_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error(routes))
    app.add_exception_handler(Exception, internal_error)
