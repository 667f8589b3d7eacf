"""The notifier against the real Redis (DB 2) and the Slack-API-shaped test server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from slack_sdk import WebClient

from bot.notifier import GROUP, POSTED_KEY, STREAM, Notifier
from tests.bot_helpers import REDIS_URL, veto_event
from tests.slack_api_server import SlackApiServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def store():
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        r.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    r.flushdb()
    yield r
    r.flushdb()


@pytest.fixture()
def slack():
    with SlackApiServer() as server:
        yield server


def make(store, slack, **kw) -> Notifier:
    client = WebClient(token="xoxb-test", base_url=slack.url, retry_handlers=[])
    kw.setdefault("block_ms", 100)
    kw.setdefault("backoff_base_s", 0.05)
    return Notifier(store, client, "C0VETO", **kw)


def publish(store, **kw) -> dict:
    ev = veto_event(**kw)
    store.xadd(STREAM, {"event": json.dumps(ev)})
    return ev


def run_until(notifier: Notifier, cond, timeout: float = 10.0) -> None:
    t = threading.Thread(target=notifier.run, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    try:
        while not cond():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.02)
    finally:
        notifier.stop()
        t.join(5)
    assert not t.is_alive()


def pending(store) -> int:
    return store.xpending(STREAM, GROUP)["pending"]


def test_posts_a_veto_with_blocks_and_fallback_then_acks(store, slack):
    n = make(store, slack)
    n.ensure_group()
    ev = publish(store)
    run_until(n, lambda: slack.calls("chat.postMessage", ok_only=True))
    (call,) = slack.calls("chat.postMessage")
    p = call["params"]
    assert p["channel"] == "C0VETO" and call["authed"]
    assert p["text"].startswith("Blocked: live migration of VM 101 (web01) to node3")
    assert "node3 lacks avx512f" in p["text"] and "use x86-64-v3" in p["text"]
    flat = json.dumps(p["blocks"], ensure_ascii=False)
    assert "`web01`" in flat and "`Skylake-Server`" in flat and "`node1` → `node3`" in flat
    assert all(b.get("text", {}).get("verbatim", True) for b in p["blocks"] if b["type"] == "section")
    assert pending(store) == 0
    assert store.get(POSTED_KEY.format(id=ev["id"])) == call["response"]["ts"]


def test_repeat_within_ten_minutes_goes_into_the_thread(store, slack):
    n = make(store, slack)
    n.ensure_group()
    publish(store, vmid=101, target="node3")
    publish(store, vmid=101, target="node3")
    publish(store, vmid=101, target="node2")
    run_until(n, lambda: len(slack.calls("chat.postMessage", ok_only=True)) >= 3)
    first, again, other = slack.calls("chat.postMessage")
    assert "thread_ts" not in first["params"]
    assert again["params"]["thread_ts"] == first["response"]["ts"]
    assert again["params"]["text"].startswith("Again: ")
    assert "thread_ts" not in other["params"]


def test_429_honours_retry_after_then_posts_once(store, slack):
    slack.fail("chat.postMessage", status=429, times=1, retry_after=1)
    n = make(store, slack)
    n.ensure_group()
    publish(store)
    run_until(n, lambda: slack.calls("chat.postMessage", ok_only=True))
    limited, ok = slack.calls("chat.postMessage")
    assert limited["status"] == 429 and ok["ok"]
    assert ok["time"] - limited["time"] >= 0.95
    assert pending(store) == 0


def test_5xx_is_retried_with_backoff(store, slack):
    slack.fail("chat.postMessage", status=503, times=3)
    n = make(store, slack)
    n.ensure_group()
    publish(store)
    run_until(n, lambda: slack.calls("chat.postMessage", ok_only=True))
    statuses = [c["status"] for c in slack.calls("chat.postMessage")]
    assert statuses == [503, 503, 503, 200]


def test_storm_of_429_and_5xx_every_veto_once_in_order_per_vm(store, slack):
    n = make(store, slack)
    n.ensure_group()
    sent = []
    for i in range(12):
        vmid = 101 + i % 3
        sent.append(publish(store, vmid=vmid, target=f"node{2 + i % 2}", name=f"vm-{vmid}-{i}"))
    for status in (429, 500, 429, 502, 429):
        slack.fail("chat.postMessage", status=status, times=2, retry_after=0)
    run_until(n, lambda: len(slack.calls("chat.postMessage", ok_only=True)) >= 12)
    time.sleep(0.2)
    ok = slack.calls("chat.postMessage", ok_only=True)
    assert len(ok) == 12
    posted_names = [c["params"]["text"].split("(")[1].split(")")[0] for c in ok]
    assert posted_names == [e["name"] for e in sent]  # stream order, so per VM too
    assert pending(store) == 0


def test_event_already_recorded_as_posted_is_acked_not_reposted(store, slack):
    """A crash after recording the post but before the ack must not post twice."""
    n = make(store, slack, consumer="c1")
    n.ensure_group()
    ev = publish(store)
    store.xreadgroup(GROUP, "c1", {STREAM: ">"})  # read, not acked
    store.set(POSTED_KEY.format(id=ev["id"]), "1700000000.000001")
    assert pending(store) == 1
    assert make(store, slack, consumer="c1").recover() == 1
    assert slack.calls("chat.postMessage") == []
    assert pending(store) == 0


def test_restart_drains_own_pending_then_reads_new(store, slack):
    n = make(store, slack, consumer="c1")
    n.ensure_group()
    publish(store, name="old")
    store.xreadgroup(GROUP, "c1", {STREAM: ">"})  # delivered to c1, which then "died"
    publish(store, name="new")
    run_until(
        make(store, slack, consumer="c1"), lambda: len(slack.calls("chat.postMessage", ok_only=True)) >= 2
    )
    assert [c["params"]["text"].split("(")[1][:3] for c in slack.calls("chat.postMessage")] == ["old", "new"]


def test_stale_pending_of_a_dead_consumer_on_another_host_is_autoclaimed(store, slack):
    n = make(store, slack, consumer="c1")
    n.ensure_group()
    publish(store)
    store.xreadgroup(GROUP, "elsewhere-1", {STREAM: ">"})
    time.sleep(0.3)
    run_until(
        make(store, slack, consumer="c2", claim_idle_s=0.2),
        lambda: slack.calls("chat.postMessage", ok_only=True),
    )
    assert len(slack.calls("chat.postMessage")) == 1 and pending(store) == 0


def test_vm_names_cannot_ping_or_format(store, slack):
    n = make(store, slack)
    n.ensure_group()
    publish(store, name="<!channel> *x* <@U123> & co", target="<!here>")
    run_until(n, lambda: slack.calls("chat.postMessage", ok_only=True))
    p = slack.calls("chat.postMessage")[0]["params"]
    raw = p["text"] + json.dumps(p["blocks"], ensure_ascii=False)
    assert "<!channel>" not in raw and "<@U123>" not in raw and "<!here>" not in raw
    assert "&lt;!channel&gt;" in p["text"] and "&amp; co" in p["text"]
    assert "`&lt;!channel&gt; *x* &lt;@U123&gt; &amp; co`" in json.dumps(p["blocks"], ensure_ascii=False)


def test_unreadable_entry_is_acked_without_posting(store, slack):
    n = make(store, slack)
    n.ensure_group()
    store.xadd(STREAM, {"event": "{not json"})
    publish(store, name="after")
    run_until(n, lambda: slack.calls("chat.postMessage", ok_only=True))
    assert len(slack.calls("chat.postMessage")) == 1 and pending(store) == 0


def _start_notifier_process(slack: SlackApiServer) -> subprocess.Popen:
    env = dict(
        os.environ,
        SLACK_BOT_TOKEN="xoxb-test",
        MIGRATION_GUARD_SLACK_CHANNEL="C0VETO",
        MIGRATION_GUARD_SLACK_API_URL=slack.url,
        MIGRATION_GUARD_REDIS_URL=REDIS_URL,
    )
    env.pop("SLACK_APP_TOKEN", None)
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli.main", "bot", "--notifier-only"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_killed_between_read_and_ack_posts_exactly_once_after_restart(store, slack):
    Notifier(store, WebClient(token="x", base_url=slack.url), "C0VETO").ensure_group()
    slack.fail("chat.postMessage", status=500, times=1000)  # Slack down: read, never acked
    publish(store)
    first = _start_notifier_process(slack)
    try:
        slack.wait_for("chat.postMessage", 1, ok_only=False)
        assert slack.calls("chat.postMessage"), first.stderr.read() if first.poll() is not None else ""
        assert pending(store) == 1
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(5)
    slack.reset()  # Slack is back
    second = _start_notifier_process(slack)
    try:
        assert len(slack.wait_for("chat.postMessage", 1)) == 1
        time.sleep(0.5)
        assert len(slack.calls("chat.postMessage")) == 1
        assert pending(store) == 0
    finally:
        second.send_signal(signal.SIGTERM)
        out, err = second.communicate(timeout=10)
    assert second.returncode == 0, err
    assert "xoxb-test" not in err


def test_idle_consumers_without_pending_entries_are_forgotten(store, slack):
    n = make(store, slack, consumer="c-now")
    n.ensure_group()
    publish(store)
    store.xreadgroup(GROUP, "old-restart", {STREAM: ">"})
    store.xgroup_createconsumer(STREAM, GROUP, "idle-empty")
    time.sleep(0.05)
    assert n.forget_idle_consumers(idle_s=0.01) == ["idle-empty"]  # old-restart still has a pending entry
    assert {c["name"] for c in store.xinfo_consumers(STREAM, GROUP)} == {"old-restart"}


def test_blocks_slack_refuses_are_resent_as_plain_text(store, slack):
    slack.fail("chat.postMessage", status=200, times=1, error="invalid_blocks")
    n = make(store, slack)
    n.ensure_group()
    publish(store)
    run_until(n, lambda: slack.calls("chat.postMessage", ok_only=True))
    refused, plain = slack.calls("chat.postMessage")
    assert "blocks" in refused["params"] and "blocks" not in plain["params"]
    assert plain["params"]["text"].startswith("Blocked: live migration of VM 101")


def test_redis_outage_is_waited_out_not_fatal(slack):
    dead = redis.Redis.from_url("redis://127.0.0.1:1/2", socket_connect_timeout=0.2)
    n = Notifier(dead, WebClient(token="x", base_url=slack.url), "C0VETO", backoff_base_s=0.05)
    t = threading.Thread(target=n.run, daemon=True)
    t.start()
    time.sleep(0.5)
    assert t.is_alive()
    n.stop()
    t.join(5)
    assert not t.is_alive()
