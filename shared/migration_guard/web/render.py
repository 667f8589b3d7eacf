"""The dashboard's HTML answers: the Jinja2 templates of web/templates/ (every value escaped: VM
names and tags are the users'), the security headers every page carries, and the error page of a
GuardError (its operator message, with the status the JSON API gives the same error)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader

from migration_guard.errors import (
    ConfigError,
    GuardError,
    InputError,
    NotFoundError,
    ProxmoxError,
    StoreUnavailable,
)

ENV = Environment(
    loader=PackageLoader("migration_guard.web", "templates"),
    autoescape=True,  # every {{ value }} is HTML-escaped, in every template
    trim_blocks=True,
    lstrip_blocks=True,
)

#: no inline script or style, nothing from another origin, never framed
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def secure(response: Any, csp: str = CSP) -> Any:
    response.headers.update(HEADERS)
    response.headers["Content-Security-Policy"] = csp
    return response


def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("session", None)
    context.setdefault("active", "")
    html = ENV.get_template(template).render(**context)
    return secure(HTMLResponse(html, status_code=status))


def status_of(error: GuardError) -> int:
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, InputError):
        return 422
    if isinstance(error, StoreUnavailable | ProxmoxError):
        return 503
    if isinstance(error, ConfigError):
        return 500
    return 503


def error_page(error: GuardError, session: Any = None, title: str = "Cannot show this page") -> HTMLResponse:
    return page(
        "error.html",
        status_of(error),
        session=session,
        title=title,
        code=error.code,
        message=str(error),
    )
