"""The read-only web dashboard, served by the same FastAPI app as the API: server-rendered pages
(Jinja2 templates, a little plain JavaScript, static files shipped in the package), a login that
keeps the bearer token server-side behind an HttpOnly session cookie, and the API's docs at
``/docs`` with local Swagger UI files."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from migration_guard.web import auth, docs, pages
from migration_guard.web.session import Sessions


def install(app: FastAPI, service: Any, tokens: tuple[str, ...]) -> Sessions:
    """Add the dashboard's pages, its static files and ``/docs`` to ``app``; the sessions (the
    one-time login codes of ``serve --demo`` are made there)."""
    sessions = Sessions(service.store, tokens, service.settings.web_session_ttl_s)
    gate = auth.Auth(sessions)
    app.mount("/ui/static", StaticFiles(packages=[("migration_guard.web", "static")]), name="ui-static")
    docs.install(app)
    app.router.routes.extend(auth.router(gate).routes)
    app.router.routes.extend(pages.router(service, gate).routes)
    app.state.web_sessions = sessions
    return sessions
