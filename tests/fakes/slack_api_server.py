"""A Slack-Web-API-shaped local HTTP server for tests: records calls, answers like Slack.

In-process::

    with SlackApiServer() as slack:
        client = WebClient(token="xoxb-test", base_url=slack.url)   # url ends in /api/
        client.chat_postMessage(channel="C1", text="hi")
        slack.calls("chat.postMessage")            # [{"method", "params", "status", ...}]
        slack.fail("chat.postMessage", status=429, times=2, retry_after=1)
        slack.fail("conversations.history", status=200, error="missing_scope")  # {"ok": false, ...}
        slack.lose_answer("chat.postMessage", hang=2)  # carried out, but no answer comes back
        slack.wait_for("chat.postMessage", 1)
        slack.messages("C1")                       # what the channel holds, oldest first

Posted messages are kept per channel (``ts``, ``thread_ts``, ``text``, ``blocks``, ``metadata``;
``chat.update`` edits one in place -- ``message_not_found`` for an unknown ``ts`` -- setting ``text``
and ``blocks``, keeping ``metadata`` unless given, and counting ``edits``)
and read back like Slack: ``conversations.history`` (``channel``, ``oldest``, ``latest``,
``limit``, ``cursor``; top-level messages only, newest first; a thread's parent carries
``thread_ts``, ``reply_count`` and ``latest_reply``) and ``conversations.replies`` (``channel``,
``ts`` -> the parent, then its replies oldest first; ``thread_not_found`` for an unknown ts). Both
include a message's ``metadata`` only when ``include_all_metadata`` is true, and page with
``has_more`` and ``response_metadata.next_cursor``. ``chat.postMessage`` refuses metadata that is
not ``{"event_type": str, "event_payload": {...}}`` (``invalid_metadata_format``).
Message ``ts`` values are the wall clock in microseconds, strictly increasing.

As a subprocess (``python tests/fakes/slack_api_server.py [--port 0]``) it prints one JSON line
``{"url": ".../api/", "base": "..."}`` on stdout and serves until killed. The same controls
are HTTP endpoints: ``GET /_test/calls[?method=chat.postMessage]``,
``GET /_test/messages[?channel=C1]``, ``POST /_test/fail``
(JSON ``{"method", "status", "times", "retry_after", "error"}``), ``POST /_test/lose_answer``
(``{"method", "times", "hang"}``), ``POST /_test/delay`` (``{"method", "seconds"}``),
``POST /_test/reset`` (``{"messages": true}`` also empties the channels).

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
BOT_ID = "B0BOT"
TEAM_ID = "T0TEST"
#: what a missing_scope answer says is ``needed`` (the real Slack names the scopes too)
NEEDED_SCOPES = {
    "conversations.history": "channels:history,groups:history,mpim:history,im:history",
    "conversations.replies": "channels:history,groups:history,mpim:history,im:history",
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
}


class _AnswerLost(Exception):
    """The call was carried out but its answer is never sent (after ``hang`` seconds the
    connection is closed)."""

    def __init__(self, hang: float) -> None:
        super().__init__(hang)
        self.hang = hang


class SlackApiServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._calls: list[dict[str, Any]] = []
        self._faults: dict[str, list[dict[str, Any]]] = {}
        self._delays: dict[str, float] = {}
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._last_ts_us = 0
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
        status 200 answers ``{"ok": false, "error": error}``, e.g. ``error="missing_scope"``, which
        also names the ``needed`` scopes like Slack). The call is not carried out."""
        with self._lock:
            self._faults.setdefault(method, []).extend(
                [{"status": status, "retry_after": retry_after, "error": error}] * times
            )

    def lose_answer(self, method: str, times: int = 1, hang: float = 0.0) -> None:
        """The next ``times`` calls of ``method`` are carried out (a post is in the channel, the
        call is recorded with ``answer_lost``) but the client never gets the answer: the
        connection is held ``hang`` seconds (longer than the client's timeout: it times out),
        then closed without a word (with ``hang=0`` at once: the client sees the connection drop)."""
        with self._lock:
            self._faults.setdefault(method, []).extend([{"lose": True, "hang": float(hang)}] * times)

    def delay(self, method: str, seconds: float) -> None:
        with self._lock:
            self._delays[method] = seconds

    def reset(self, messages: bool = False) -> None:
        """Forget the calls, faults and delays; with ``messages`` empty the channels too."""
        with self._lock:
            self._calls.clear()
            self._faults.clear()
            self._delays.clear()
            if messages:
                self._messages.clear()

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """The messages posted (to ``channel``, or anywhere), oldest first, as stored."""
        with self._lock:
            return [
                dict(m, channel=c)
                for c, msgs in self._messages.items()
                if channel is None or c == channel
                for m in msgs
            ]

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
        """A message ts like Slack's: the wall clock (``seconds.microseconds``), never repeated."""
        with self._lock:
            self._last_ts_us = max(int(time.time() * 1_000_000), self._last_ts_us + 1)
            return f"{self._last_ts_us // 1_000_000}.{self._last_ts_us % 1_000_000:06d}"

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
        if fault is not None and fault.get("lose"):
            body = self._answer(method, params) if authed else {"ok": False, "error": "not_authed"}
            self._record(
                {**call, "status": 200, "ok": bool(body.get("ok")), "response": body, "answer_lost": True}
            )
            raise _AnswerLost(fault["hang"])
        if fault is not None:
            status = fault["status"]
            headers = {"Content-Type": "application/json"}
            if status == 200:  # Slack's "ok": false answers, e.g. error="invalid_blocks"
                body = {"ok": False, "error": fault["error"] or "internal_error"}
                if body["error"] == "missing_scope":
                    body["needed"] = NEEDED_SCOPES.get(method, "")
                    body["provided"] = "chat:write,commands"
                raw = json.dumps(body).encode()
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
            metadata = params.get("metadata")
            if metadata is not None and not _valid_metadata(metadata):
                return {"ok": False, "error": "invalid_metadata_format"}
            if method == "chat.update":  # edits in place: text, blocks (and metadata when given)
                ts = params.get("ts")
                with self._lock:
                    stored = next((m for m in self._messages.get(channel, []) if m["ts"] == ts), None)
                    if stored is None:
                        return {"ok": False, "error": "message_not_found"}
                    stored["text"] = params.get("text", "")
                    if params.get("blocks"):
                        stored["blocks"] = params["blocks"]
                    else:
                        stored.pop("blocks", None)
                    if metadata is not None:
                        stored["metadata"] = metadata
                    stored["edited"] = {"user": BOT_USER_ID, "ts": f"{time.time():.6f}"}
                    stored["edits"] = stored.get("edits", 0) + 1
                message = {"text": params.get("text", ""), "ts": ts, "user": BOT_USER_ID}
            else:
                message = self._store(channel, params)
            return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}
        if method in ("conversations.history", "conversations.replies"):
            return self._read(method, params)
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

    def _store(self, channel: str, params: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "text": params.get("text", ""),
            "ts": self._next_ts(),
        }
        for key in ("thread_ts", "blocks", "metadata"):
            if params.get(key):
                message[key] = params[key]
        with self._lock:
            self._messages.setdefault(channel, []).append(message)
        return dict(message)

    def _read(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        with self._lock:
            stored = [dict(m) for m in self._messages.get(channel, [])]
        replies: dict[str, list[dict[str, Any]]] = {}
        for m in stored:
            if m.get("thread_ts") and m["thread_ts"] != m["ts"]:
                replies.setdefault(m["thread_ts"], []).append(m)
        if method == "conversations.replies":
            ts = params.get("ts")
            hit = next((m for m in stored if m["ts"] == ts), None)
            root = hit and (hit.get("thread_ts") or hit["ts"])
            parent = next((m for m in stored if m["ts"] == root), None)
            if parent is None:
                return {"ok": False, "error": "thread_not_found"}
            chosen = [parent, *replies.get(parent["ts"], [])]
        else:
            oldest, latest = _float(params.get("oldest"), 0.0), _float(params.get("latest"), float("inf"))
            chosen = [
                m
                for m in reversed(stored)
                if not (m.get("thread_ts") and m["thread_ts"] != m["ts"]) and oldest < float(m["ts"]) < latest
            ]
        limit = max(1, min(999, int(_float(params.get("limit"), 100))))
        start = int(str(params.get("cursor") or "next:0").removeprefix("next:") or 0)
        page = chosen[start : start + limit]
        more = start + limit < len(chosen)
        with_metadata = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
        out = []
        for m in page:
            m = dict(m)
            if not with_metadata:
                m.pop("metadata", None)
            thread = replies.get(m["ts"])
            if thread:
                m.update(
                    thread_ts=m["ts"],
                    reply_count=len(thread),
                    reply_users_count=1,
                    reply_users=[BOT_USER_ID],
                    latest_reply=thread[-1]["ts"],
                )
            out.append(m)
        return {
            "ok": True,
            "messages": out,
            "has_more": more,
            "response_metadata": {"next_cursor": f"next:{start + limit}" if more else ""},
        }


def _valid_metadata(metadata: Any) -> bool:
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return False
    return (
        isinstance(metadata, dict)
        and isinstance(metadata.get("event_type"), str)
        and isinstance(metadata.get("event_payload"), dict)
    )


def _float(value: Any, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


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
            elif parts.path == "/_test/messages":
                channel = parse_qs(parts.query).get("channel", [None])[0]
                self._json(200, server.messages(channel))
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
                    for key in ("blocks", "attachments", "view", "metadata"):
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
            try:
                answer = server.handle(method, params, authed)
            except _AnswerLost as lost:
                time.sleep(lost.hang)
                self.close_connection = True  # no status line, no body: the client hears nothing
                return
            self._send(*answer)

        def _control(self, action: str, params: dict[str, Any]) -> None:
            actions: dict[str, Callable[[], None]] = {
                "fail": lambda: server.fail(
                    params["method"],
                    int(params.get("status", 500)),
                    int(params.get("times", 1)),
                    params.get("retry_after"),
                    params.get("error"),
                ),
                "lose_answer": lambda: server.lose_answer(
                    params["method"], int(params.get("times", 1)), float(params.get("hang", 0))
                ),
                "delay": lambda: server.delay(params["method"], float(params.get("seconds", 0))),
                "reset": lambda: server.reset(bool(params.get("messages"))),
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
