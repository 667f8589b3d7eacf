"""``migration-guard bot`` in Socket Mode (the default), as a subprocess, against a local
WebSocket server playing Slack's Socket Mode endpoint and the Slack-API-shaped server."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bot.support import TOKEN, FakeService
from tests.fakes.slack_api_server import SlackApiServer

ws_sync = pytest.importorskip("websockets.sync.server")
pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class SocketModeEndpoint:
    """Accepts the bot's WebSocket, says hello, sends envelopes, collects the bot's acks."""

    def __init__(self) -> None:
        self.to_bot: queue.Queue[dict] = queue.Queue()
        self.from_bot: queue.Queue[dict] = queue.Queue()
        self.server = ws_sync.serve(self._handle, "127.0.0.1", 0)
        import threading

        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/link"

    def _handle(self, ws) -> None:
        ws.send(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "connection_info": {"app_id": "A0APP"},
                    "debug_info": {"host": "test"},
                }
            )
        )
        while True:
            try:
                envelope = self.to_bot.get(timeout=0.05)
                ws.send(json.dumps(envelope))
            except queue.Empty:
                pass
            try:
                raw = ws.recv(timeout=0.05)
            except TimeoutError:
                continue
            except Exception:  # the bot went away
                return
            self.from_bot.put(json.loads(raw))

    def close(self) -> None:
        self.server.shutdown()


def test_socket_mode_slash_command_and_mention():
    with SlackApiServer() as slack, FakeService(delay=3.5) as service:
        endpoint = SocketModeEndpoint()
        slack.socket_mode_url = endpoint.url
        env = dict(
            os.environ,
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_APP_TOKEN="xapp-test",
            MIGRATION_GUARD_SLACK_API_URL=slack.url,
            MIGRATION_GUARD_URL=service.url,
            MIGRATION_GUARD_TOKEN=TOKEN,
        )
        for k in ("MIGRATION_GUARD_REDIS_URL", "MIGRATION_GUARD_SLACK_CHANNEL", "SLACK_SIGNING_SECRET"):
            env.pop(k, None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "migration_guard.cli.main", "bot"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            slack.wait_for("apps.connections.open", 1, timeout=20)
            endpoint.to_bot.put(
                {
                    "envelope_id": "env-1",
                    "type": "slash_commands",
                    "accepts_response_payload": True,
                    "payload": {
                        "token": "legacy",
                        "team_id": "T0TEST",
                        "channel_id": "C0ASK",
                        "user_id": "U0ASK",
                        "command": "/canmove",
                        "text": "101 node3",
                        "api_app_id": "A0APP",
                        "response_url": slack.response_url("sm1"),
                        "trigger_id": "1.2.3",
                    },
                }
            )
            sent = time.monotonic()
            ack = endpoint.from_bot.get(timeout=10)
            assert ack["envelope_id"] == "env-1"
            assert time.monotonic() - sent < 3.0  # acked before the slow service answered
            (reply,) = slack.wait_for("response_url", 1, timeout=15)
            assert reply["params"]["text"].startswith("NO: VM 101 (web01) cannot move to node3")
            service.delay = 0.0

            endpoint.to_bot.put(
                {
                    "envelope_id": "env-2",
                    "type": "events_api",
                    "accepts_response_payload": False,
                    "retry_attempt": 0,
                    "retry_reason": "",
                    "payload": {
                        "token": "legacy",
                        "team_id": "T0TEST",
                        "api_app_id": "A0APP",
                        "type": "event_callback",
                        "event_id": "Ev9",
                        "event_time": int(time.time()),
                        "event": {
                            "type": "app_mention",
                            "user": "U0ASK",
                            "channel": "C0ASK",
                            "text": "<@U0BOT> where can vm 101 go?",
                            "ts": "1700000000.000900",
                        },
                    },
                }
            )
            assert endpoint.from_bot.get(timeout=10)["envelope_id"] == "env-2"
            (post,) = slack.wait_for("chat.postMessage", 1, timeout=15)
            assert post["params"]["thread_ts"] == "1700000000.000900"
            assert "can move to 1 of 2 other nodes" in post["params"]["text"]
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=15)
            endpoint.close()
        assert proc.returncode == 0, err
        assert "xoxb-test" not in err and "xapp-test" not in err
