"""The Slack-API-shaped test server itself (used by the bot tests and the end-to-end test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tests.fakes.slack_api_server import SlackApiServer

ROOT = Path(__file__).resolve().parents[2]


def test_in_process_records_and_answers_like_slack():
    with SlackApiServer() as slack:
        assert slack.url.endswith("/api/")
        client = WebClient(token="xoxb-t", base_url=slack.url, retry_handlers=[])
        first = client.chat_postMessage(channel="C1", text="hi", blocks=[{"type": "divider"}])
        reply = client.chat_postMessage(channel="C1", text="again", thread_ts=first["ts"])
        assert first["ok"] and first["channel"] == "C1" and reply["ts"] > first["ts"]
        assert reply["message"]["thread_ts"] == first["ts"]
        with pytest.raises(SlackApiError) as no_channel:
            client.chat_postMessage(channel="", text="x")
        assert no_channel.value.response["error"] == "channel_not_found"
        with pytest.raises(SlackApiError) as no_token:
            WebClient(base_url=slack.url).chat_postMessage(channel="C1", text="x")
        assert no_token.value.response["error"] == "not_authed"
        slack.fail("chat.postMessage", status=429, times=1, retry_after=7)
        with pytest.raises(SlackApiError) as limited:
            client.chat_postMessage(channel="C1", text="x")
        assert limited.value.response.status_code == 429
        assert limited.value.response.headers["Retry-After"] == "7"
        assert [c["status"] for c in slack.calls("chat.postMessage")] == [200, 200, 200, 200, 429]
        assert len(slack.calls("chat.postMessage", ok_only=True)) == 2
        r = httpx.post(slack.response_url("abc"), json={"text": "answer"})
        assert r.json() == {"ok": True}
        assert slack.calls("response_url")[0]["params"] == {"text": "answer", "_path_id": "abc"}


def test_as_a_subprocess_with_http_controls():
    proc = subprocess.Popen(
        [sys.executable, "tests/fakes/slack_api_server.py"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        info = json.loads(proc.stdout.readline())
        base = info["base"]
        assert info["url"] == base + "/api/"
        assert httpx.post(
            base + "/_test/fail", json={"method": "chat.postMessage", "status": 503, "times": 1}
        ).json() == {"ok": True}
        client = WebClient(token="xoxb-t", base_url=info["url"], retry_handlers=[])
        with pytest.raises(SlackApiError):
            client.chat_postMessage(channel="C1", text="one")
        client.chat_postMessage(channel="C1", text="two")
        calls = httpx.get(base + "/_test/calls", params={"method": "chat.postMessage"}).json()
        assert [(c["status"], c["params"]["text"]) for c in calls] == [(503, "one"), (200, "two")]
        httpx.post(base + "/_test/reset")
        assert httpx.get(base + "/_test/calls").json() == []
    finally:
        proc.terminate()
        proc.wait(10)
