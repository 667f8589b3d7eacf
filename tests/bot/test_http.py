"""Bolt handling real signed HTTP requests (uvicorn + Starlette on a local port), with the Web API
pointed at the Slack-API-shaped test server and a stand-in service speaking the API's JSON."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from migration_guard.client import ServiceClient
from migration_guard_bot import http_server
from migration_guard_bot.app import build_app
from migration_guard_bot.settings import BotSettings
from tests.bot.support import TOKEN, FakeService
from tests.fakes.slack_api_server import SlackApiServer

pytestmark = pytest.mark.integration
SECRET = "test-signing-secret"


class Bot:
    def __init__(self, slack: SlackApiServer, service_url: str, command: str = "/canmove") -> None:
        self.settings = BotSettings(
            bot_token="xoxb-test",
            signing_secret=SECRET,
            slack_api_url=slack.url,
            service_url=service_url,
            service_token=TOKEN,
            command=command,
        )
        self.service = ServiceClient(service_url, TOKEN, timeout=15)
        self.app = build_app(self.settings, self.service)
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


@pytest.fixture()
def slack():
    with SlackApiServer() as server:
        yield server


@pytest.fixture()
def service():
    with FakeService() as svc:
        yield svc


@pytest.fixture()
def bot(slack, service):
    b = Bot(slack, service.url)
    yield b
    b.stop()


FORM = "application/x-www-form-urlencoded"


def answers(slack: SlackApiServer, rid: str = "r1", n: int = 1) -> list[dict]:
    got = [c for c in slack.wait_for("response_url", n, timeout=15) if c["params"].get("_path_id") == rid]
    assert got, slack.calls()
    return got


def test_url_verification_echoes_the_challenge(bot):
    body = json.dumps({"token": "legacy", "challenge": "ch4ll3nge", "type": "url_verification"})
    r = post(bot, body, "application/json")
    assert r.status_code == 200 and "ch4ll3nge" in r.text


def test_slash_command_acks_fast_then_answers_via_response_url(slack, service, bot):
    service.delay = 5.0
    started = time.monotonic()
    r = post(bot, slash(slack, "101 node3"), FORM)
    assert r.status_code == 200
    assert time.monotonic() - started < 3.0
    assert slack.calls("response_url") == []
    (reply,) = answers(slack)
    assert time.monotonic() - started >= 5.0
    p = reply["params"]
    assert p["text"].startswith("NO: VM 101 (web01) cannot move to node3")
    assert "node3 lacks avx512f" in p["text"] and "Suggestion: use x86-64-v3" in p["text"]
    assert p["response_type"] == "in_channel"
    flat = json.dumps(p["blocks"], ensure_ascii=False)
    assert ":no_entry: No:* VM 101 `web01` cannot move to `node3`" in flat
    path, query, headers = service.requests[-1]
    assert path == "/v1/vms/101/check" and query == {"target": "node3"}
    assert headers["Authorization"] == f"Bearer {TOKEN}"


def test_burst_of_slash_commands_all_acked_fast_while_the_service_is_slow(slack, service, bot):
    """More questions than Bolt has workers (10): each still acked in time, each answered."""
    service.delay = 3.2
    for i in range(11):
        body = slash(slack, "101 node3", rid=f"burst{i}")
        started = time.monotonic()
        assert post(bot, body, FORM).status_code == 200
        assert time.monotonic() - started < 3.0, f"request {i} was not acked in time"
    got = slack.wait_for("response_url", 11, timeout=20)
    assert sorted(c["params"]["_path_id"] for c in got) == sorted(f"burst{i}" for i in range(11))
    assert all(c["params"]["text"].startswith("NO: VM 101 (web01)") for c in got)


def test_slash_command_without_target_lists_every_node(slack, bot):
    post(bot, slash(slack, "VM #101"), FORM)
    p = answers(slack)[0]["params"]
    assert "can move to 1 of 2 other nodes" in p["text"]
    assert "node2: yes" in p["text"] and "node3: no" in p["text"]


def test_cross_cluster_target_passes_target_cluster(slack, service, bot):
    post(bot, slash(slack, "can vm 101 move to clusterB/node2?"), FORM)
    p = answers(slack)[0]["params"]
    assert service.requests[-1][1] == {"target": "node2", "target_cluster": "clusterB"}
    assert "clusterB/node2" in p["text"]


def test_unknown_node_names_known_nodes_and_closest(slack, bot):
    post(bot, slash(slack, "101 nod3"), FORM)
    p = answers(slack)[0]["params"]
    assert "There is no node nod3. Did you mean node3? Known nodes: node1, node2, node3." in p["text"]


def test_service_down_is_one_line(slack):
    b = Bot(slack, "http://127.0.0.1:9")  # nothing listens there
    try:
        post(b, slash(slack, "101 node3"), FORM)
        p = answers(slack)[0]["params"]
        assert p["text"].startswith("Cannot answer right now: the migration-guard service at")
        assert "\n" not in p["text"] and len(p["blocks"]) == 1
        assert p["response_type"] == "ephemeral"  # only the asker sees the error
    finally:
        b.stop()


def test_vm_name_injection_is_neutralised(slack, bot):
    post(bot, slash(slack, "102 node2"), FORM)
    p = answers(slack)[0]["params"]
    raw = p["text"] + json.dumps(p["blocks"])
    assert "<!channel>" not in raw and "&lt;!channel&gt;" in p["text"]
    post(bot, slash(slack, "103 node2", rid="r2"), FORM)
    p = answers(slack, "r2", 2)[0]["params"]
    flat = json.dumps(p["blocks"], ensure_ascii=False)
    assert "<https://evil|x>" not in flat
    assert "`*bold* _it_ &lt;https://evil|x&gt;`" in flat  # inside code: no formatting, no link


def test_oversized_text_gets_a_clear_refusal(slack, bot):
    post(bot, slash(slack, "101 " + "x" * 3990), FORM)
    p = answers(slack)[0]["params"]
    assert "That message is 3994 characters long; I read questions of up to 500." in p["text"]


def test_oversized_body_is_refused_with_413(bot):
    body = "x" * (http_server.MAX_BODY + 1)
    assert post(bot, body, FORM).status_code == 413


def test_configured_command_name(slack, service):
    b = Bot(slack, service.url, command="/vmmove")
    try:
        assert post(b, slash(slack, "help", command="/vmmove"), FORM).status_code == 200
        assert "/vmmove 101 node3" in answers(slack)[0]["params"]["text"]
    finally:
        b.stop()


def test_app_mention_answers_in_thread(slack, service, bot):
    service.delay = 3.5
    inner = {
        "type": "app_mention",
        "user": "U0ASK",
        "text": "<@U0BOT> Can VM 101 go to node2?",
        "ts": "1700000000.000100",
        "channel": "C0ASK",
        "event_ts": "1700000000.000100",
    }
    started = time.monotonic()
    assert post(bot, event(inner), "application/json").status_code == 200
    assert time.monotonic() - started < 3.0  # acked before the slow service answered
    (call,) = slack.wait_for("chat.postMessage", 1)
    p = call["params"]
    assert p["channel"] == "C0ASK" and p["thread_ts"] == "1700000000.000100"
    assert p["text"].startswith("YES: VM 101 (web01) can move to node2")
    assert ":white_check_mark: Yes:*" in json.dumps(p["blocks"])


def test_direct_message_answers_and_ignores_bots(slack, bot):
    dm = {
        "type": "message",
        "channel_type": "im",
        "user": "U0ASK",
        "text": "why was 101 blocked?",
        "ts": "1700000000.000200",
        "channel": "D0ASK",
        "event_ts": "1700000000.000200",
    }
    from_bot = dict(dm, bot_id="B0BOT", text="recent blocks", ts="1700000000.000300")
    post(bot, event(from_bot, "Ev2"), "application/json")
    post(bot, event(dm, "Ev3"), "application/json")
    (call,) = slack.wait_for("chat.postMessage", 1)
    time.sleep(0.3)
    assert len(slack.calls("chat.postMessage")) == 1
    assert call["params"]["channel"] == "D0ASK"
    assert call["params"]["text"].startswith("Latest decisions for VM 101:")


def test_app_home_opened_publishes_the_home_tab(slack, bot):
    inner = {
        "type": "app_home_opened",
        "user": "U0ASK",
        "channel": "D0ASK",
        "tab": "home",
        "event_ts": "1700000000.000300",
    }
    assert post(bot, event(inner), "application/json").status_code == 200
    (call,) = slack.wait_for("views.publish", 1)
    view = call["params"]["view"]
    assert call["params"]["user_id"] == "U0ASK" and view["type"] == "home"
    flat = json.dumps(view["blocks"], ensure_ascii=False)
    assert "`node3` – Intel(R) Xeon(R) Gold 6130, GenuineIntel – best type `Haswell`" in flat
    assert "*Recommended CPU type*\\n`x86-64-v3`" in flat
    assert "VM 101 `web01` `node1` → `node3`" in flat


@pytest.mark.parametrize(
    "make_headers",
    [
        lambda body: {},  # unsigned
        lambda body: signed("text=something+else"),  # a signature of another body
        lambda body: signed(body, secret="not-the-secret"),  # forged with a guessed secret
        lambda body: {**signed(body), "X-Slack-Signature": "v0=" + "0" * 64},
    ],
    ids=["unsigned", "other-body", "forged", "garbage"],
)
def test_bad_signatures_get_401(slack, bot, make_headers):
    body = slash(slack, "101 node3")
    assert post(bot, body, FORM, make_headers(body)).status_code == 401
    time.sleep(0.2)
    assert slack.calls("response_url") == []


def test_stale_signature_gets_401(slack, bot):
    body = slash(slack, "101 node3")
    assert post(bot, body, FORM, signed(body, ts=int(time.time()) - 600)).status_code == 401


def test_replayed_request_gets_401(slack, bot):
    body = slash(slack, "101 node3")
    headers = signed(body)
    assert post(bot, body, FORM, headers).status_code == 200
    assert post(bot, body, FORM, headers).status_code == 401
    answers(slack)
    time.sleep(0.3)
    assert len(slack.calls("response_url")) == 1


def test_settings_changes_do_not_leak_tokens():
    s = BotSettings(bot_token="xoxb-secret", signing_secret="sig-secret", service_token="svc-secret")
    assert "secret" not in repr(replace(s, channel="C1"))


def test_http_mode_as_a_subprocess(slack, service):
    """``migration-guard bot --http``: listens where told, 401 unsigned, answers signed commands."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(
        os.environ,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET=SECRET,
        MIGRATION_GUARD_SLACK_API_URL=slack.url,
        MIGRATION_GUARD_URL=service.url,
        MIGRATION_GUARD_TOKEN=TOKEN,
        MIGRATION_GUARD_BOT_LISTEN="127.0.0.1:0",
    )
    for k in ("SLACK_APP_TOKEN", "MIGRATION_GUARD_REDIS_URL", "MIGRATION_GUARD_SLACK_CHANNEL"):
        env.pop(k, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "migration_guard.cli.main", "bot", "--http"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        for _ in range(50):
            line = proc.stderr.readline()
            if "listening on " in line:
                url = line.split("listening on ")[1].strip()
                break
        assert url and url.endswith("/slack/events")
        body = slash(slack, "can vm 101 move to node2")
        assert httpx.post(url, content=body, headers={"Content-Type": FORM}).status_code == 401
        r = httpx.post(url, content=body, headers={"Content-Type": FORM, **signed(body)})
        assert r.status_code == 200
        assert answers(slack)[0]["params"]["text"].startswith("YES: VM 101 (web01) can move to node2")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "xoxb-test" not in err and SECRET not in err


# --- refused before the body is read ------------------------------------------------------------


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _stream(bot: Bot, headers: dict[str, str], mib: int) -> tuple[int | None, int]:
    """POST ``mib`` MiB of chunked body; (status or None when the bot cut the upload, MiB sent)."""
    sent = 0

    def body():
        nonlocal sent
        block = b"x" * (1 << 20)
        for _ in range(mib):
            sent += 1
            yield block

    try:
        answer = httpx.post(bot.url, content=body(), headers={"Content-Type": FORM, **headers}, timeout=60)
    except httpx.HTTPError:
        return None, sent
    return answer.status_code, sent


@pytest.mark.parametrize("signed_request", [False, True], ids=["unsigned", "signed"])
def test_a_huge_chunked_body_is_refused_without_the_bot_growing(bot, signed_request):
    headers = signed("") if signed_request else {}
    before = _rss_mib()
    status, sent = _stream(bot, headers, 300)
    grown = _rss_mib() - before
    assert status in (None, 401 if not signed_request else 413)
    assert grown < 60, f"the bot grew by {grown:.0f} MiB reading a body it refuses"


def test_an_unsigned_request_is_refused_before_its_body_is_read(bot):
    big = "x" * (http_server.MAX_BODY - 10)
    answer = httpx.post(bot.url, content=big.encode(), headers={"Content-Type": FORM}, timeout=10)
    assert answer.status_code == 401


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        ("{not json", "application/json"),
        ("[1, 2]", "application/json"),
        ("payload=%7Bnot+json", FORM),
        ('{"type": "url_verification", "challenge": "x"', "application/json"),
        ("\udcff", FORM),
    ],
)
@pytest.mark.parametrize("good_signature", [True, False])
def test_a_malformed_body_is_400_without_a_traceback(bot, caplog, body, ctype, good_signature):
    raw = body.encode("utf-8", "surrogateescape")
    headers = signed(raw.decode("latin-1")) if good_signature else signed("something else")
    answer = httpx.post(bot.url, content=raw, headers={"Content-Type": ctype, **headers}, timeout=10)
    assert answer.status_code == 400 and answer.json() == {"error": "malformed body"}
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelname == "ERROR"]
