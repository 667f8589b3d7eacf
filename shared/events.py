"""The decision log (audit, ``GET /v1/decisions``) and the veto event stream
``migration-guard:events`` (read by the Slack bot's consumer group).

Both live in the store. While Redis is down, decisions and events are kept in memory (bounded)
and written once Redis is back, oldest first; ``publish`` says whether the event went out now.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any

from .errors import StoreUnavailable
from .store import Store

EVENTS_STREAM = "migration-guard:events"
DECISIONS_STREAM = "migration-guard:decisions"
#: how many not-yet-written events / decisions are kept while Redis is down
PENDING_LIMIT = 1000

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(now: float | None = None) -> str:
    """A ULID: 48-bit milliseconds + 80 random bits, Crockford base32 (sorts by time)."""
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


_SECOND: list = [None, ""]


def iso_utc(ts: float) -> str:
    """``2026-11-29T01:39:07.123Z`` (the second's text is reused: every warm check calls this)."""
    sec = int(ts)
    if _SECOND[0] != sec:
        _SECOND[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _SECOND[0] = sec
    return f"{_SECOND[1]}.{int((ts - sec) * 1000):03d}Z"


class EventLog:
    def __init__(self, store: Store, *, keep: int = 10_000) -> None:
        self.store = store
        self.keep = keep
        self._pending_events: deque[str] = deque(maxlen=PENDING_LIMIT)
        self._pending_decisions: deque[str] = deque(maxlen=PENDING_LIMIT)
        #: recent decisions kept in memory too: GET /v1/decisions still answers while Redis is down
        self._recent: deque[dict] = deque(maxlen=PENDING_LIMIT)
        self.dropped = 0
        self._flush_lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        return len(self._pending_events) + len(self._pending_decisions)

    async def record(self, decision: dict) -> bool:
        """Append a decision to the audit log; False when it was queued (Redis down)."""
        self._recent.appendleft(decision)
        text = json.dumps(decision, separators=(",", ":"))
        await self.flush()
        if self._pending_decisions:
            self._queue(self._pending_decisions, text)
            return False
        try:
            await self._xadd(DECISIONS_STREAM, text, self.keep)
        except StoreUnavailable:
            self._queue(self._pending_decisions, text)
            return False
        return True

    async def publish(self, event: dict) -> bool:
        """Publish a veto event; False when it was queued for later (Redis down)."""
        text = json.dumps(event, separators=(",", ":"))
        await self.flush()
        if self._pending_events:
            self._queue(self._pending_events, text)
            return False
        try:
            await self._xadd(EVENTS_STREAM, text, 100_000)
        except StoreUnavailable:
            self._queue(self._pending_events, text)
            return False
        return True

    def _queue(self, queue: deque[str], text: str) -> None:
        if len(queue) == queue.maxlen:
            self.dropped += 1
        queue.append(text)

    async def flush(self) -> int:
        """Write what was queued while Redis was down; returns how many went out."""
        if not self.pending:
            return 0
        async with self._flush_lock:
            return await self._flush()

    async def _flush(self) -> int:
        sent = 0
        for queue, stream, keep in (
            (self._pending_decisions, DECISIONS_STREAM, self.keep),
            (self._pending_events, EVENTS_STREAM, 100_000),
        ):
            while queue:
                try:
                    await self._xadd(stream, queue[0], keep)
                except StoreUnavailable:
                    return sent
                if queue:
                    queue.popleft()
                sent += 1
        return sent

    async def _xadd(self, stream: str, text: str, keep: int) -> None:
        await self.store.run(
            lambda r: r.xadd(
                stream,
                {"event" if stream == EVENTS_STREAM else "decision": text},
                maxlen=keep,
                approximate=True,
            )
        )

    async def recent(self, limit: int = 50, vmid: int | None = None) -> list[dict]:
        """Newest first. From the store when it answers, else from memory."""
        try:
            out: list[dict] = []
            last = "+"
            while len(out) < limit:

                def page(r: Any, last: str = last) -> Awaitable[Any]:
                    return r.xrevrange(DECISIONS_STREAM, max=last, min="-", count=max(limit * 2, 100))

                batch = await self.store.run(page)
                if not batch:
                    break
                for _entry_id, fields in batch:
                    try:
                        decision = json.loads(fields.get("decision", "{}"))
                    except ValueError:
                        continue
                    if vmid is None or decision.get("vmid") == vmid:
                        out.append(decision)
                        if len(out) >= limit:
                            break
                last = "(" + batch[-1][0]
            return out
        except StoreUnavailable:
            rows = [d for d in self._recent if vmid is None or d.get("vmid") == vmid]
            return rows[:limit]
