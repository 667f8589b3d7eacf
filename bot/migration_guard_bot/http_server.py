"""``--http`` mode: Slack's Events API / slash commands on ``POST /slack/events``.

A Starlette app served by uvicorn. Before a byte of the body is read, a request without Slack's
signature headers or with a stale (> 5 minutes) timestamp gets 401, and a declared body over
``MAX_BODY`` bytes 413; a body without a declared length (chunked) is read only up to
``MAX_BODY``. A body that is not the JSON (or form) Slack sends gets 400. Bolt then verifies
the signature with SLACK_SIGNING_SECRET (401 when wrong); a signature seen before within those 5
minutes is a replay and gets 401 too. Bolt's dispatch (which may call auth.test) runs in a
worker thread so the event loop never blocks.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time

import uvicorn
from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from slack_bolt.request.internals import parse_body
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

PATH = "/slack/events"
MAX_BODY = 256 * 1024
REPLAY_WINDOW_S = 5 * 60


class ReplayGuard:
    """Remembers request signatures for the window in which Bolt would still accept them."""

    def __init__(self, window_s: float = REPLAY_WINDOW_S) -> None:
        self.window_s = window_s
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_time(self, signature: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {s: t for s, t in self._seen.items() if t > now}
            expiry = self._seen.get(signature)
            if expiry is not None and expiry > now:
                return False
            self._seen[signature] = now + self.window_s
            return True


def starlette_app(app: App) -> Starlette:
    guard = ReplayGuard()

    async def events(request: Request) -> Response:
        refused = _refuse_unread(request)
        if refused is not None:
            return refused
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():  # a chunked body: read only up to the limit
            size += len(chunk)
            if size > MAX_BODY:
                log.warning("refused a Slack request whose body is over %d bytes", MAX_BODY)
                return JSONResponse({"error": "request too large"}, status_code=413)
            chunks.append(chunk)
        body = b"".join(chunks)
        if not _parses(body, request.headers.get("content-type")):
            log.warning("refused a request to %s whose body is not the JSON or form Slack sends", PATH)
            return JSONResponse({"error": "malformed body"}, status_code=400)
        signature = request.headers.get("x-slack-signature", "")
        if signature and not guard.first_time(signature):
            log.warning("refused a replayed Slack request (same signature seen in the last 5 minutes)")
            return JSONResponse({"error": "invalid request"}, status_code=401)
        bolt_request = to_bolt_request(request, body)
        bolt_response = await run_in_threadpool(app.dispatch, bolt_request)
        return to_starlette_response(bolt_response)

    async def health(_request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route(PATH, events, methods=["POST"]), Route("/healthz", health)])


def _refuse_unread(request: Request) -> Response | None:
    """401 or 413 from the headers alone, before a byte of the body is read."""
    length = request.headers.get("content-length")
    if length is not None and (not length.strip().isdigit() or int(length) > MAX_BODY):
        log.warning("refused a Slack request whose declared body is over %d bytes", MAX_BODY)
        return JSONResponse({"error": "request too large"}, status_code=413)
    timestamp = request.headers.get("x-slack-request-timestamp", "")
    if not request.headers.get("x-slack-signature") or not timestamp.isdigit():
        log.warning("refused an unsigned request to %s (no Slack signature headers)", PATH)
        return JSONResponse({"error": "invalid request"}, status_code=401)
    if abs(time.time() - int(timestamp)) > REPLAY_WINDOW_S:
        log.warning("refused a Slack request with a stale timestamp (over 5 minutes off)")
        return JSONResponse({"error": "invalid request"}, status_code=401)
    return None


def _parses(body: bytes, content_type: str | None) -> bool:
    """Whether Bolt can parse the body (its own parser): JSON, or a form whose payload is JSON."""
    try:
        parsed = parse_body(body.decode("utf-8"), (content_type or "").split(";")[0].strip() or None)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return False
    return isinstance(parsed, dict)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def server_for(app: App, sock: socket.socket) -> uvicorn.Server:
    config = uvicorn.Config(
        starlette_app(app), log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    return server


def serve(app: App, sock: socket.socket) -> None:
    """Serve on an already bound socket until SIGINT/SIGTERM, then return (exit status 0).

    uvicorn shuts down gracefully on those signals and then re-raises them; the no-op handlers
    installed here (restored by uvicorn afterwards) make that re-raise harmless.
    """
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda _signum, _frame: None)
    server_for(app, sock).run(sockets=[sock])
