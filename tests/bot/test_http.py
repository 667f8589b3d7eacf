"""The ``--http`` server in front of Bolt: signatures, replays, body limits, malformed bodies and the
subprocess; what each listener answers is in tests/bot/listeners/."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from migration_guard_bot import http_server
from migration_guard_bot.settings import BotSettings
from tests.bot.signed_requests import FORM, SECRET, Bot, answers, post, signed, slash
from tests.bot.support import TOKEN

pytestmark = pytest.mark.integration


def test_url_verification_echoes_the_challenge(bot):
    body = json.dumps({"token": "legacy", "challenge": "ch4ll3nge", "type": "url_verification"})
    r = post(bot, body, "application/json")
    assert r.status_code == 200 and "ch4ll3nge" in r.text


def test_oversized_body_is_refused_with_413(bot):
    body = "x" * (http_server.MAX_BODY + 1)
    assert post(bot, body, FORM).status_code == 413


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
