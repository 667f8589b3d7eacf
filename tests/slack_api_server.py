"""A Slack-Web-API-shaped local HTTP server for tests: records calls, answers like Slack.

In-process::

    with SlackApiServer() as slack:
        client = WebClient(token="xoxb-test", base_url=slack.url)   # url ends in /api/
        client.chat_postMessage(channel="C1", text="hi")
        slack.calls("chat.postMessage")            # [{"method", "params", "status", ...}]
        slack.fail("chat.postMessage", status=429, times=2, retry_after=1)
        slack.wait_for("chat.postMessage", 1)

As a subprocess (``python tests/slack_api_server.py [--port 0]``) it prints one JSON line
``{"url": ".../api/", "base": "..."}`` on stdout and serves until killed. The same controls
are HTTP endpoints: ``GET /_test/calls[?method=chat.postMessage]``, ``POST /_test/fail``
(JSON ``{"method", "status", "times", "retry_after"}``), ``POST /_test/delay``
(``{"method", "seconds"}``), ``POST /_test/reset``.

Slash-command ``response_url``s can point here: ``slack.response_url("abc")`` -> POSTs to it are
recorded as method ``"response_url"`` with ``params["_path_id"] == "abc"``.

Every Web API call must carry ``Authorization: Bearer <token>`` (else ``not_authed``, like
Slack); ``chat.postMessage`` needs a ``channel``. Tokens are not stored, only whether one was sent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

BOT_USER_ID = "U0BOT"
TEAM_ID = "T0TEST"


class SlackApiServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._calls: list[dict[str, Any]] = []
        self._faults: dict[str, list[dict[str, Any]]] = {}
        self._delays: dict[str, float] = {}
        self._ts = 0
        #: the WebSocket URL apps.connections.open hands out (to an xapp- token); None refuses
        self.socket_mode_url: str | None = None
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> SlackApiServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="slack-api", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> SlackApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        """The Web API base URL (ends in ``/api/``) for ``WebClient(base_url=...)``."""
        return self.base + "/api/"

    def response_url(self, name: str = "r1") -> str:
        return f"{self.base}/response/{name}"

    # --- controls ------------------------------------------------------------------------

    def calls(self, method: str | None = None, *, ok_only: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(c)
                for c in self._calls
                if (method is None or c["method"] == method) and (not ok_only or c["ok"])
            ]

    def fail(
        self,
        method: str,
        status: int = 500,
        times: int = 1,
        retry_after: int | None = None,
        error: str | None = None,
    ) -> None:
        """The next ``times`` calls of ``method`` answer ``status`` (429 carries Retry-After;
        status 200 answers ``{"ok": false, "error": error}``)."""
        with self._lock:
            self._faults.setdefault(method, []).extend(
                [{"status": status, "retry_after": retry_after, "error": error}] * times
            )

    def delay(self, method: str, seconds: float) -> None:
        with self._lock:
            self._delays[method] = seconds

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._faults.clear()
            self._delays.clear()

    def wait_for(
        self, method: str, count: int = 1, timeout: float = 10.0, *, ok_only: bool = True
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` (successful) calls of ``method`` were recorded; return them."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.calls(method, ok_only=ok_only)
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.02)

    # --- answering -----------------------------------------------------------------------

    def _next_ts(self) -> str:
        with self._lock:
            self._ts += 1
            return f"{1_700_000_000 + self._ts}.{self._ts:06d}"

    def _take_fault(self, method: str) -> dict[str, Any] | None:
        with self._lock:
            queue = self._faults.get(method)
            return queue.pop(0) if queue else None

    def _record(self, call: dict[str, Any]) -> None:
        with self._lock:
            call["seq"] = len(self._calls)
            self._calls.append(call)

    def handle(self, method: str, params: dict[str, Any], authed: bool) -> tuple[int, dict[str, str], bytes]:
        delay = self._delays.get(method, 0.0)
        if delay:
            time.sleep(delay)
        call: dict[str, Any] = {"method": method, "params": params, "authed": authed, "time": time.time()}
        fault = self._take_fault(method)
        if fault is not None:
            status = fault["status"]
            headers = {"Content-Type": "application/json"}
            if status == 200:  # Slack's "ok": false answers, e.g. error="invalid_blocks"
                raw = json.dumps({"ok": False, "error": fault["error"] or "internal_error"}).encode()
            elif status == 429:
                headers["Retry-After"] = str(fault["retry_after"] if fault["retry_after"] is not None else 1)
                body = {"ok": False, "error": fault["error"] or "ratelimited"}
                raw = json.dumps(body).encode()
            else:
                headers["Content-Type"] = "text/plain"
                raw = (fault["error"] or f"upstream error {status}").encode()
            self._record({**call, "status": status, "ok": False})
            return status, headers, raw
        if method == "response_url":
            body = {"ok": True}
        elif not authed:
            body = {"ok": False, "error": "not_authed"}
        else:
            body = self._answer(method, params)
        self._record({**call, "status": 200, "ok": bool(body.get("ok")), "response": body})
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def _answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://test.slack.com/",
                "team": "Test",
                "user": "migration-guard",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": "B0BOT",
            }
        if method in ("chat.postMessage", "chat.update"):
            channel = params.get("channel")
            if not channel:
                return {"ok": False, "error": "channel_not_found"}
            ts = params.get("ts") if method == "chat.update" else self._next_ts()
            message = {"text": params.get("text", ""), "ts": ts, "user": BOT_USER_ID}
            if params.get("thread_ts"):
                message["thread_ts"] = params["thread_ts"]
            return {"ok": True, "channel": channel, "ts": ts, "message": message}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": self._next_ts()}
        if method == "views.publish":
            view = params.get("view")
            if isinstance(view, str):
                view = json.loads(view)
            return {"ok": True, "view": {"id": "V0TEST", **(view or {})}}
        if method == "apps.connections.open":  # Socket Mode needs an app-level token
            if not (self.socket_mode_url and params.get("_app_token")):
                return {"ok": False, "error": "not_allowed_token_type"}
            return {"ok": True, "url": self.socket_mode_url}
        if method == "conversations.open":
            return {"ok": True, "channel": {"id": "D0TEST"}}
        return {"ok": True}


def _handler_for(server: SlackApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, headers: dict[str, str], raw: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _json(self, status: int, body: Any) -> None:
            self._send(status, {"Content-Type": "application/json"}, json.dumps(body).encode())

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            if parts.path == "/_test/calls":
                method = parse_qs(parts.query).get("method", [None])[0]
                self._json(200, server.calls(method))
            elif parts.path.startswith("/api/"):
                params = {k: v[0] for k, v in parse_qs(parts.query).items()}
                self._api(parts.path[len("/api/") :], params)
            else:
                self._json(404, {"ok": False, "error": "unknown_path"})

        def do_POST(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            raw = self._body()
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            try:
                if ctype == "application/json":
                    params = json.loads(raw or b"{}")
                else:
                    params = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                    params.update({k: v[0] for k, v in parse_qs(parts.query).items()})
                    for key in ("blocks", "attachments", "view"):
                        if isinstance(params.get(key), str):
                            with contextlib.suppress(ValueError):
                                params[key] = json.loads(params[key])
            except ValueError:
                self._json(400, {"ok": False, "error": "invalid_json"})
                return
            if parts.path.startswith("/_test/"):
                self._control(parts.path[len("/_test/") :], params)
            elif parts.path.startswith("/response/"):
                params = dict(params) if isinstance(params, dict) else {"body": params}
                params["_path_id"] = parts.path[len("/response/") :]
                self._api("response_url", params)
            elif parts.path.startswith("/api/"):
                self._api(parts.path[len("/api/") :], params)
            else:
                self._json(404, {"ok": False, "error": "unknown_path"})

        def _api(self, method: str, params: dict[str, Any]) -> None:
            auth = self.headers.get("Authorization") or ""
            authed = auth.startswith("Bearer ") and len(auth) > len("Bearer ") or bool(params.get("token"))
            token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else str(params.get("token") or "")
            params.pop("token", None)
            if method == "apps.connections.open":  # only the kind of token is kept, never the token
                params["_app_token"] = token.startswith("xapp-")
            self._send(*server.handle(method, params, authed))

        def _control(self, action: str, params: dict[str, Any]) -> None:
            actions: dict[str, Callable[[], None]] = {
                "fail": lambda: server.fail(
                    params["method"],
                    int(params.get("status", 500)),
                    int(params.get("times", 1)),
                    params.get("retry_after"),
                    params.get("error"),
                ),
                "delay": lambda: server.delay(params["method"], float(params.get("seconds", 0))),
                "reset": server.reset,
            }
            if action not in actions:
                self._json(404, {"ok": False, "error": "unknown_control"})
                return
            try:
                actions[action]()
            except (KeyError, TypeError, ValueError) as exc:
                self._json(400, {"ok": False, "error": str(exc)})
                return
            self._json(200, {"ok": True})

    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Slack-Web-API-shaped test server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    server = SlackApiServer(args.host, args.port)
    print(json.dumps({"url": server.url, "base": server.base}), flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
