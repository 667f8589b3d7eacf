"""Decision log and veto events: stream shape, newest first, kept in memory while Redis is down."""

from __future__ import annotations

import asyncio
import json

import fakeredis

from migration_guard.store.events import DECISIONS_STREAM, EVENTS_STREAM, PENDING_LIMIT, EventLog, new_id
from migration_guard.store.redis_store import Store
from tests.fakes.redis import FlakyRedis


def run(coro):
    return asyncio.run(coro)


def event(i: int) -> dict:
    return {
        "id": new_id(),
        "time": "2026-01-01T00:00:00Z",
        "vmid": 100 + i,
        "name": f"vm{i}",
        "source": "pve1",
        "target": "pve3",
        "cpu": "x86-64-v4",
        "verdict": "deny",
        "reasons": [],
        "suggestion": None,
        "enforced": True,
    }


def test_publish_writes_one_event_field_of_json():
    async def go():
        redis = fakeredis.FakeAsyncRedis(decode_responses=True)
        log = EventLog(Store(redis, "embedded"))
        assert await log.publish(event(1)) is True
        entries = await redis.xrange(EVENTS_STREAM)
        assert len(entries) == 1
        fields = entries[0][1]
        assert list(fields) == ["event"]
        assert json.loads(fields["event"])["vmid"] == 101

    run(go())


def test_decisions_newest_first_with_limit_and_vmid_filter():
    async def go():
        redis = fakeredis.FakeAsyncRedis(decode_responses=True)
        log = EventLog(Store(redis, "embedded"))
        for i in range(10):
            await log.record({"id": str(i), "vmid": 101 if i % 2 else 102})
        got = await log.recent(3)
        assert [d["id"] for d in got] == ["9", "8", "7"]
        only = await log.recent(10, vmid=102)
        assert [d["id"] for d in only] == ["8", "6", "4", "2", "0"]
        assert await redis.xlen(DECISIONS_STREAM) == 10

    run(go())


def test_events_queued_while_redis_down_then_published_in_order():
    async def go():
        flaky = FlakyRedis()
        log = EventLog(Store(flaky, "embedded", retry_s=0.0))
        flaky.down = True
        assert await log.publish(event(1)) is False
        assert await log.publish(event(2)) is False
        assert await log.record({"id": "d1", "vmid": 101}) is False
        assert log.pending == 3
        # GET /v1/decisions still answers from memory
        assert [d["id"] for d in await log.recent(5)] == ["d1"]
        flaky.down = False
        assert await log.flush() == 3
        assert log.pending == 0
        entries = await flaky.inner.xrange(EVENTS_STREAM)
        assert [json.loads(f["event"])["vmid"] for _, f in entries] == [101, 102]
        assert await flaky.inner.xlen(DECISIONS_STREAM) == 1

    run(go())


def test_queue_is_bounded():
    async def go():
        flaky = FlakyRedis()
        log = EventLog(Store(flaky, "embedded", retry_s=0.0))
        flaky.down = True
        for i in range(PENDING_LIMIT + 5):
            await log.publish(event(i))
        assert log.pending == PENDING_LIMIT
        assert log.dropped == 5

    run(go())


def test_ids_sort_by_time():
    a, b = new_id(1000.0), new_id(1000.001)
    assert len(a) == 26 and a < b
