"""The notifier against the real Redis (DB 2) and the Slack-API-shaped test server."""

from __future__ import annotations

import calendar
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from slack_sdk import WebClient

from migration_guard_bot.notifier import GROUP, POSTED_KEY, SHOWN_KEY, STREAM, THREAD_KEY, Notifier
from tests.bot.support import REDIS_URL, veto_event
from tests.fakes.slack_api_server import SlackApiServer
from tests.support.service_stack import flushed_redis

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def store():
    r = flushed_redis(REDIS_URL, decode_responses=True)
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


def test_ha_repeats_edit_one_message_per_vm_and_target_with_the_running_count(store, slack):
    n = make(store, slack)
    n.ensure_group()
    since = "2026-11-29T10:02:05.120Z"
    run = [publish(store, vmid=101, target="node3", repeat={"count": i, "since": since}) for i in (1, 2, 3)]
    other = publish(store, vmid=101, target="node2", repeat={"count": 1, "since": since})
    run_until(n, lambda: recorded(store, *run, other))

    first, second = slack.calls("chat.postMessage")
    assert "thread_ts" not in first["params"] and "thread_ts" not in second["params"]
    assert "node3" in first["params"]["text"] and "node2" in second["params"]["text"]
    assert "times since" not in first["params"]["text"]  # the first: no count yet
    edits = slack.calls("chat.update")
    assert [e["params"]["ts"] for e in edits] == [first["response"]["ts"]] * 2
    assert "blocked 2 times since 10:02 UTC" in edits[0]["params"]["text"]
    shown = {m["ts"]: m for m in slack.messages("C0VETO")}
    assert len(shown) == 2  # one message per VM and target
    top = shown[first["response"]["ts"]]
    assert top["text"].endswith(
        "blocked 3 times since 10:02 UTC; HA retries until the node leaves maintenance "
        "or the CPU type changes."
    )
    assert "*blocked 3 times since 10:02 UTC;" in json.dumps(top["blocks"])
    assert top["metadata"]["event_payload"] == {"event_id": run[0]["id"]}  # the edit keeps it
    assert {store.get(POSTED_KEY.format(id=ev["id"])) for ev in run} == {first["response"]["ts"]}
    assert store.get(SHOWN_KEY.format(key="lab:101:lab:node3")) == "3"


def test_ha_repeats_after_a_bot_restart_edit_the_same_message(store, slack):
    """HA retries every ~10 s while the bot restarts: the run's message (kept in Redis) is edited,
    no second message is posted."""
    since = "2026-11-29T03:12:00.000Z"
    first = publish(store, vmid=104, target="node3", repeat={"count": 1, "since": since})
    run_until(make(store, slack, consumer="before-restart"), lambda: recorded(store, first))
    later = [publish(store, vmid=104, target="node3", repeat={"count": i, "since": since}) for i in (2, 7)]
    run_until(make(store, slack, consumer="after-restart"), lambda: recorded(store, *later))
    assert len(slack.calls("chat.postMessage")) == 1
    [message] = slack.messages("C0VETO")
    assert "blocked 7 times since 03:12 UTC" in message["text"]


def test_repeats_without_a_count_from_the_service_are_counted_by_the_notifier(store, slack):
    n = make(store, slack)
    n.ensure_group()
    events = [publish(store), publish(store), publish(store)]  # a service that sends no "repeat"
    run_until(n, lambda: recorded(store, *events))
    (post,) = slack.calls("chat.postMessage")
    assert len(slack.calls("chat.update")) == 2
    (message,) = slack.messages("C0VETO")
    assert "blocked 3 times; HA retries until the node leaves maintenance" in message["text"]
    assert message["ts"] == post["response"]["ts"]


def test_a_new_run_of_the_service_starts_a_new_message(store, slack):
    n = make(store, slack)
    n.ensure_group()
    old = [publish(store, repeat={"count": i, "since": now_iso(-900)}) for i in (1, 2)]
    new = publish(store, repeat={"count": 1, "since": now_iso()})  # the service counts anew after a gap
    run_until(n, lambda: recorded(store, *old, new))
    assert len(slack.calls("chat.postMessage")) == 2 and len(slack.calls("chat.update")) == 1
    assert (
        store.get(THREAD_KEY.format(key="lab:101:lab:node3"))
        == slack.calls("chat.postMessage")[1]["response"]["ts"]
    )


def test_an_older_count_never_turns_the_message_back(store, slack):
    n = make(store, slack)
    n.ensure_group()
    first = publish(store, repeat={"count": 1, "since": now_iso()})
    later = publish(store, repeat={"count": 5, "since": now_iso()})
    late = publish(store, repeat={"count": 4, "since": now_iso()})  # handled after 5 (another consumer)
    run_until(n, lambda: recorded(store, first, later, late))
    assert len(slack.calls("chat.update")) == 1
    (message,) = slack.messages("C0VETO")
    assert "blocked 5 times" in message["text"]


def test_a_deleted_message_is_replaced_by_a_new_post(store, slack):
    n = make(store, slack)
    n.ensure_group()
    first = publish(store, repeat={"count": 1, "since": now_iso()})
    run_until(n, lambda: recorded(store, first))
    slack.reset(messages=True)  # someone deleted it in Slack
    again = publish(store, repeat={"count": 2, "since": now_iso()})
    run_until(make(store, slack), lambda: recorded(store, again))
    (edit,) = slack.calls("chat.update")
    assert edit["response"] == {"ok": False, "error": "message_not_found"}
    (post,) = slack.calls("chat.postMessage", ok_only=True)
    assert "blocked 2 times" in post["params"]["text"]
    assert store.get(THREAD_KEY.format(key="lab:101:lab:node3")) == post["response"]["ts"]


def test_edits_ride_out_429_and_5xx_and_count_each_veto_once(store, slack):
    n = make(store, slack)
    n.ensure_group()
    first = publish(store, repeat={"count": 1, "since": now_iso()})
    run_until(n, lambda: recorded(store, first))
    slack.fail("chat.update", status=429, retry_after=0)
    slack.fail("chat.update", status=503)
    again = publish(store, repeat={"count": 2, "since": now_iso()})
    run_until(make(store, slack), lambda: recorded(store, again))
    assert [c["status"] for c in slack.calls("chat.update")] == [429, 503, 200]
    assert len(slack.calls("chat.postMessage")) == 1 and pending(store) == 0


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
        sent.append(publish(store, vmid=vmid, target=f"node{2 + i}", name=f"vm-{vmid}-{i}"))  # no repeats
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
    publish(store, name="new", vmid=102)
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
        [sys.executable, "-m", "migration_guard.cli.main", "bot", "--notifier-only"],
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


# --- exactly once across a crash between the post and its record -----------------------------

VETO_METADATA_TYPE = "migration_guard_veto"


class _Killed(BaseException):
    """The notifier process dying (not an Exception: nothing in the notifier catches it)."""


class _DiesBeforeRecording:
    """The notifier's Redis, except that the process 'dies' right before the record-and-ack
    transaction: the post went out, nothing of it is recorded, the entry stays pending."""

    def __init__(self, store: redis.Redis) -> None:
        self._store = store

    def pipeline(self, *args, **kwargs):
        raise _Killed

    def __getattr__(self, name: str):
        return getattr(self._store, name)


def post_then_die(store, slack, consumer: str, count: int = 1) -> list[str]:
    """``consumer`` reads the next ``count`` entries and posts each, dying before recording it."""
    dying = make(_DiesBeforeRecording(store), slack, consumer=consumer)
    reply = store.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count)
    ids = []
    for entry_id, fields in reply[0][1]:
        with pytest.raises(_Killed):
            dying.handle(entry_id, fields)
        ids.append(entry_id)
    return ids


def recorded(store, *events: dict):
    """Every one of ``events`` recorded as posted, and nothing left pending."""
    return all(store.get(POSTED_KEY.format(id=ev["id"])) for ev in events) and pending(store) == 0


def now_iso(offset_s: float = 0.0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset_s))


def lookups(slack) -> list[dict]:
    return [c for c in slack.calls() if c["method"] in ("conversations.history", "conversations.replies")]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    return proc.pid


@pytest.fixture()
def fresh_warnings(monkeypatch):
    """The once-per-process lookup warnings, as in a process that has not warned yet."""
    import migration_guard_bot.slack_delivery as delivery_module

    monkeypatch.setattr(delivery_module, "_warned", set())


@pytest.mark.parametrize("how", ["own pending", "dead consumer on this host", "consumer on another host"])
def test_killed_between_post_and_record_is_found_in_slack_and_not_posted_again(store, slack, how):
    make(store, slack).ensure_group()
    ev = publish(store, time=now_iso(-30))
    first = {
        "own pending": "c1",
        "dead consumer on this host": f"{socket.gethostname()}-{dead_pid()}",
        "consumer on another host": "elsewhere-1",
    }[how]
    post_then_die(store, slack, first)
    (post,) = slack.calls("chat.postMessage", ok_only=True)  # Slack has it; Redis knows nothing
    assert post["params"]["metadata"] == {
        "event_type": VETO_METADATA_TYPE,
        "event_payload": {"event_id": ev["id"]},
    }
    assert store.get(POSTED_KEY.format(id=ev["id"])) is None and pending(store) == 1
    if how == "consumer on another host":
        time.sleep(0.3)
    restarted = make(store, slack, consumer="c1" if how == "own pending" else "c2", claim_idle_s=0.2)
    run_until(restarted, lambda: pending(store) == 0)

    assert len(slack.calls("chat.postMessage")) == 1  # not posted a second time
    assert store.get(POSTED_KEY.format(id=ev["id"])) == post["response"]["ts"]
    assert store.get(THREAD_KEY.format(key="lab:101:lab:node3")) == post["response"]["ts"]
    (lookup,) = lookups(slack)
    p = lookup["params"]
    assert lookup["method"] == "conversations.history" and p["channel"] == "C0VETO"
    assert p["include_all_metadata"] == "1" and p["limit"] == "200"
    event_time = calendar.timegm(time.strptime(ev["time"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(float(p["oldest"]) - (event_time - 600)) < 1  # 10 minutes before the event
    assert restarted.posted == 0


def test_a_redelivered_veto_that_never_reached_slack_is_posted_once(store, slack):
    make(store, slack).ensure_group()
    ev = publish(store)
    store.xreadgroup(GROUP, "c1", {STREAM: ">"})  # read, then the process died before posting
    n = make(store, slack, consumer="c1")
    run_until(n, lambda: pending(store) == 0)
    (post,) = slack.calls("chat.postMessage")
    assert post["ok"] and post["params"]["metadata"]["event_payload"] == {"event_id": ev["id"]}
    assert [c["method"] for c in lookups(slack)] == ["conversations.history"]
    assert n.posted == 1


@pytest.mark.parametrize("hang", [0.0, 1.5], ids=["connection dropped", "answer after the client timeout"])
def test_lost_post_answer_the_retry_finds_it_and_posts_once(store, slack, hang):
    slack.lose_answer("chat.postMessage", hang=hang)  # Slack posts it; the answer never arrives
    client = WebClient(token="xoxb-test", base_url=slack.url, retry_handlers=[], timeout=0.5)
    n = Notifier(store, client, "C0VETO", block_ms=100, backoff_base_s=0.05)
    n.ensure_group()
    ev = publish(store)
    run_until(n, lambda: recorded(store, ev))

    (post,) = slack.calls("chat.postMessage")
    assert post["answer_lost"] and post["ok"]
    assert [m["text"] for m in slack.messages("C0VETO")] == [post["params"]["text"]]  # once in the channel
    (lookup,) = lookups(slack)
    assert lookup["method"] == "conversations.history" and lookup["params"]["include_all_metadata"] == "1"
    assert lookup["time"] > post["time"]
    assert store.get(POSTED_KEY.format(id=ev["id"])) == post["response"]["ts"]


def test_lost_answer_of_an_edit_is_edited_again_never_posted(store, slack):
    client = WebClient(token="xoxb-test", base_url=slack.url, retry_handlers=[], timeout=0.5)
    n = Notifier(store, client, "C0VETO", block_ms=100, backoff_base_s=0.05)
    n.ensure_group()
    first = publish(store, repeat={"count": 1, "since": now_iso()})
    run_until(n, lambda: recorded(store, first))
    (parent,) = slack.calls("chat.postMessage")
    slack.lose_answer("chat.update")
    again = publish(store, repeat={"count": 2, "since": now_iso()})
    n = Notifier(store, client, "C0VETO", block_ms=100, backoff_base_s=0.05)
    run_until(n, lambda: recorded(store, again))

    edits = slack.calls("chat.update")
    assert len(edits) == 2 and edits[0]["answer_lost"] and edits[1]["ok"]  # an edit is safe to repeat
    assert len(slack.calls("chat.postMessage")) == 1 and lookups(slack) == []
    (message,) = slack.messages("C0VETO")
    assert "blocked 2 times" in message["text"] and message["edits"] == 2
    assert store.get(POSTED_KEY.format(id=again["id"])) == parent["response"]["ts"]


@pytest.mark.parametrize(
    ("status", "error", "says"),
    [
        (200, "missing_scope", "add channels:history (and groups:history for a private channel)"),
        (503, None, "HTTP 503"),
    ],
    ids=["missing_scope", "Slack 5xx"],
)
def test_lookup_refused_warns_once_and_posts_again(store, slack, caplog, fresh_warnings, status, error, says):
    make(store, slack).ensure_group()
    vetoes = [publish(store, vmid=101), publish(store, vmid=102)]
    post_then_die(store, slack, "c1", count=2)
    slack.fail("conversations.history", status=status, error=error, times=2)
    caplog.set_level("INFO", logger="migration_guard_bot.notifier")
    run_until(make(store, slack, consumer="c1"), lambda: pending(store) == 0)

    posts = slack.calls("chat.postMessage", ok_only=True)
    assert len(posts) == 4  # at least once: each veto twice, none lost
    assert [c["status"] for c in lookups(slack)] == [status, status]
    warned = [
        r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "cannot look" in r.getMessage()
    ]
    assert len(warned) == 1, warned
    assert says in warned[0] and "posting" in warned[0] and "C0VETO" in warned[0]
    for ev, post in zip(vetoes, posts[2:], strict=True):
        assert store.get(POSTED_KEY.format(id=ev["id"])) == post["response"]["ts"]


def test_missing_scope_warning_tells_the_operator_what_to_add(store, slack, caplog, fresh_warnings):
    make(store, slack).ensure_group()
    publish(store)
    post_then_die(store, slack, "c1")
    slack.fail("conversations.history", status=200, error="missing_scope")
    caplog.set_level("WARNING", logger="migration_guard_bot.notifier")
    run_until(make(store, slack, consumer="c1"), lambda: pending(store) == 0)
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    text = warning.getMessage()
    assert "missing_scope" in text and "needs channels:history" in text
    assert text.endswith(
        "posting again (said once; until the scope is added and the app reinstalled, a veto may show twice "
        "after a restart)"
    )


def test_new_entries_make_no_history_call(store, slack):
    n = make(store, slack)
    n.ensure_group()
    events = [publish(store, vmid=101), publish(store, vmid=101), publish(store, vmid=102)]  # 2nd: edit
    slack.fail("chat.postMessage", status=429, retry_after=0)  # Slack did not post: no lookup
    slack.fail("chat.postMessage", status=503)
    run_until(n, lambda: recorded(store, *events))
    assert lookups(slack) == []
    methods = [c["method"] for c in slack.calls()]
    assert methods == ["chat.postMessage"] * 3 + ["chat.update", "chat.postMessage"]
    posts = slack.calls("chat.postMessage", ok_only=True)
    assert all(p["params"]["metadata"]["event_type"] == VETO_METADATA_TYPE for p in posts)
    assert slack.calls("chat.update")[0]["params"]["ts"] == posts[0]["response"]["ts"]


def test_a_redelivered_repeat_is_edited_again_not_posted(store, slack):
    n = make(store, slack)
    n.ensure_group()
    first = publish(store, repeat={"count": 1, "since": now_iso(-30)})
    run_until(n, lambda: recorded(store, first))
    (parent,) = slack.calls("chat.postMessage")
    again = publish(store, repeat={"count": 2, "since": now_iso(-30)})
    post_then_die(store, slack, "c1")  # edited the message, died before recording
    assert len(slack.calls("chat.update")) == 1 and pending(store) == 1
    run_until(make(store, slack, consumer="c1"), lambda: pending(store) == 0)

    assert len(slack.calls("chat.postMessage")) == 1  # never a second message
    assert [c["method"] for c in lookups(slack)] == ["conversations.history"]  # not its own post
    assert len(slack.calls("chat.update")) == 2  # edited again: an edit sets the whole message
    assert store.get(POSTED_KEY.format(id=again["id"])) == parent["response"]["ts"]
    (message,) = slack.messages("C0VETO")
    assert "blocked 2 times" in message["text"] and "blocked 3" not in message["text"]


def test_a_redelivered_first_post_is_found_even_after_another_consumer_led_the_run(store, slack):
    """The first attempt posted and died; meanwhile another consumer posted the run's message."""
    n = make(store, slack)
    n.ensure_group()
    first = publish(store)
    post_then_die(store, slack, "c1")  # top level, not recorded
    publish(store)
    run_until(make(store, slack, consumer="c2"), lambda: len(slack.calls("chat.postMessage")) == 2)
    top, newer = slack.calls("chat.postMessage")
    assert "thread_ts" not in top["params"] and "thread_ts" not in newer["params"]
    run_until(make(store, slack, consumer="c1"), lambda: pending(store) == 0)
    assert len(slack.calls("chat.postMessage")) == 2 and slack.calls("chat.update") == []
    assert [c["method"] for c in lookups(slack)] == ["conversations.history"]
    assert store.get(POSTED_KEY.format(id=first["id"])) == top["response"]["ts"]


@pytest.mark.parametrize("when", [None, "garbage", 1700000000], ids=["missing", "garbage", "not a string"])
def test_event_without_a_readable_time_is_looked_for_without_oldest(store, slack, when):
    make(store, slack).ensure_group()
    ev = veto_event()
    if when is None:
        del ev["time"]
    else:
        ev["time"] = when
    store.xadd(STREAM, {"event": json.dumps(ev)})
    post_then_die(store, slack, "c1")
    run_until(make(store, slack, consumer="c1"), lambda: pending(store) == 0)
    (lookup,) = lookups(slack)
    assert "oldest" not in lookup["params"]
    assert len(slack.calls("chat.postMessage")) == 1


def test_lookup_pages_through_a_busy_channel(store, slack, monkeypatch):
    import migration_guard_bot.slack_delivery as delivery_module

    monkeypatch.setattr(delivery_module, "LOOKUP_PAGE", 2)
    make(store, slack).ensure_group()
    ev = publish(store)
    post_then_die(store, slack, "c1")
    chatter = WebClient(token="xoxb-test", base_url=slack.url, retry_handlers=[])
    for i in range(5):
        chatter.chat_postMessage(channel="C0VETO", text=f"chatter {i}")
    run_until(make(store, slack, consumer="c1"), lambda: pending(store) == 0)
    pages = lookups(slack)
    assert [c["params"].get("cursor") for c in pages] == [None, "next:2", "next:4"]
    assert len(slack.calls("chat.postMessage")) == 6  # the veto once, and the chatter
    assert store.get(POSTED_KEY.format(id=ev["id"])) == slack.calls("chat.postMessage")[0]["response"]["ts"]


def test_stop_during_a_rate_limited_lookup_ends_promptly_and_keeps_the_entry(store, slack):
    make(store, slack).ensure_group()
    publish(store)
    post_then_die(store, slack, "c1")
    slack.fail("conversations.history", status=429, retry_after=60)
    n = make(store, slack, consumer="c1")
    t = threading.Thread(target=n.run, daemon=True)
    t.start()
    slack.wait_for("conversations.history", 1, ok_only=False)
    time.sleep(0.2)
    started = time.monotonic()
    n.stop()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - started < 2
    assert pending(store) == 1 and len(slack.calls("chat.postMessage")) == 1  # kept for the next start


def test_gateway_timeout_is_checked_before_posting_again(store, slack):
    """A 504 is Slack's edge giving up waiting: the post may have happened, so it is looked for."""
    slack.fail("chat.postMessage", status=504)  # this one was not carried out: nothing to find
    n = make(store, slack)
    n.ensure_group()
    ev = publish(store)
    run_until(n, lambda: recorded(store, ev))
    assert [c["status"] for c in slack.calls("chat.postMessage")] == [504, 200]
    assert [c["method"] for c in lookups(slack)] == ["conversations.history"]
    assert len(slack.messages("C0VETO")) == 1


def test_blocks_slack_refuses_in_an_edit_are_replaced_by_plain_text(store, slack):
    n = make(store, slack)
    n.ensure_group()
    first = publish(store, repeat={"count": 1, "since": now_iso()})
    run_until(n, lambda: recorded(store, first))
    slack.fail("chat.update", status=200, error="invalid_blocks")
    again = publish(store, repeat={"count": 2, "since": now_iso()})
    run_until(make(store, slack), lambda: recorded(store, again))
    refused, plain = slack.calls("chat.update")
    assert refused["params"]["blocks"] and plain["params"]["blocks"] == []
    (message,) = slack.messages("C0VETO")
    assert "blocks" not in message and "blocked 2 times" in message["text"]  # no stale count left
