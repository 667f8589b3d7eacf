"""The veto stream is defined once (store/stream.py): what the service publishes, the bot reads."""

from __future__ import annotations

import asyncio

import fakeredis

from migration_guard.store.events import EventLog
from migration_guard.store.redis_store import Store
from migration_guard.store.stream import EVENTS_STREAM, decode_event
from migration_guard_bot import notifier

EVENT = {
    "id": "01JTEST",
    "time": "2026-01-01T00:00:00Z",
    "vmid": 101,
    "name": "build01",
    "source": "pve1",
    "target": "pve2",
    "source_cluster": "lab",
    "target_cluster": "lab",
    "cpu": "host",
    "verdict": "deny",
    "reasons": [{"code": "vendor-mismatch", "message": "AMD to Intel"}],
    "suggestion": None,
    "enforced": True,
}


def test_the_bot_reads_the_stream_the_service_writes():
    assert notifier.STREAM == EVENTS_STREAM

    async def publish_and_read():
        redis = fakeredis.FakeAsyncRedis(decode_responses=True)
        log = EventLog(Store(redis, "embedded", retry_s=0.0))
        assert await log.publish(EVENT)
        return await redis.xrange(EVENTS_STREAM)

    entries = asyncio.run(publish_and_read())
    assert len(entries) == 1
    entry_id, fields = entries[0]
    veto = notifier.parse_entry(entry_id, fields)
    assert veto is not None and veto.event_id == "01JTEST" and veto.body == EVENT


def test_an_entry_without_a_veto_is_skipped():
    assert decode_event({"event": "not json"}) is None
    assert decode_event({"other": "{}"}) is None
    assert decode_event({"event": '{"id": "x"}'}) is None  # no vmid: not a veto
