"""Signed Slack requests to the real Bolt app: ``Bot`` serves ``build_app`` over HTTP (uvicorn +
Starlette on a local port) with the Web API pointed at the Slack-API-shaped test server; ``signed``
signs a body the way Slack does (v0 HMAC-SHA256 with the signing secret)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from urllib.parse import urlencode

import httpx

from migration_guard.client import ServiceClient
from migration_guard_bot import http_server
from migration_guard_bot.app import build_app
from migration_guard_bot.settings import BotSettings
from tests.bot.support import TOKEN
from tests.fakes.slack_api_server import SlackApiServer

SECRET = "test-signing-secret"


class Bot:
    def __init__(
        self,
        slack: SlackApiServer,
        service_url: str,
        command: str = "/canmove",
        *,
        token: str = TOKEN,
        store: object = None,
        channel: str = "",
    ) -> None:
        self.settings = BotSettings(
            bot_token="xoxb-test",
            signing_secret=SECRET,
            slack_api_url=slack.url,
            service_url=service_url,
            service_token=token,
            command=command,
            channel=channel,
        )
        self.service = ServiceClient(service_url, token, timeout=15)
        self.app = build_app(self.settings, self.service, store=store)
        sock = http_server.bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}{http_server.PATH}"
        self.server = http_server.server_for(self.app, sock)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.service.close()


def signed(body: str, *, secret: str = SECRET, ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sig}


def post(bot: Bot, body: str, ctype: str, headers: dict[str, str] | None = None) -> httpx.Response:
    h = {"Content-Type": ctype, **(signed(body) if headers is None else headers)}
    return httpx.post(bot.url, content=body.encode(), headers=h, timeout=10)


def slash(slack: SlackApiServer, text: str, command: str = "/canmove", rid: str = "r1") -> str:
    return urlencode(
        {
            "token": "legacy",
            "team_id": "T0TEST",
            "team_domain": "test",
            "channel_id": "C0ASK",
            "channel_name": "ops",
            "user_id": "U0ASK",
            "user_name": "ops",
            "command": command,
            "text": text,
            "api_app_id": "A0APP",
            "response_url": slack.response_url(rid),
            "trigger_id": "1.2.3",
        }
    )


def event(inner: dict, event_id: str = "Ev1") -> str:
    return json.dumps(
        {
            "token": "legacy",
            "team_id": "T0TEST",
            "api_app_id": "A0APP",
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "event": inner,
            "authorizations": [{"team_id": "T0TEST", "user_id": "U0BOT", "is_bot": True}],
        }
    )


FORM = "application/x-www-form-urlencoded"


def answers(slack: SlackApiServer, rid: str = "r1", n: int = 1) -> list[dict]:
    got = [c for c in slack.wait_for("response_url", n, timeout=15) if c["params"].get("_path_id") == rid]
    assert got, slack.calls()
    return got
