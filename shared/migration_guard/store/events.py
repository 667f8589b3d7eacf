"""The decision log (audit, ``GET /v1/decisions``) and the writing side of the veto event stream
(``stream.EVENTS_STREAM``, read by the Slack bot's consumer group).

Both live in the store. While Redis is down, decisions and events are kept in memory (bounded)
and written once Redis is back, oldest first; ``publish`` says whether the event went out now.
With a spool (``serve`` against Redis: a file in MIGRATION_GUARD_STATE_DIR) what is queued is on
disk too, so it survives a restart and is replayed once Redis answers. Against Redis every entry
is written once only: a marker key per id, set in the same script as the XADD, makes a replay of
an entry already written (a lost reply, a crash before the spool was rewritten) a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections import deque
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import orjson
from redis import exceptions as redis_errors

from migration_guard.errors import ConfigError, StoreUnavailable
from migration_guard.store.redis_store import Store
from migration_guard.store.stream import EVENT_FIELD, EVENTS_STREAM, DriftEvent, VetoEvent, encode_event

log = logging.getLogger("migration_guard.events")

DECISIONS_STREAM = "migration-guard:decisions"
#: how many not-yet-written events / decisions are kept while Redis is down
PENDING_LIMIT = 1000

#: how long the marker of a written entry is kept (a replay later than that would write it again)
WRITTEN_MARKER_S = 7 * 24 * 3600
SPOOL_FILE = "pending-events.jsonl"

#: XADD unless the entry's marker exists; marker and entry in one step (a Redis script is atomic)
_XADD_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', ARGV[3], ARGV[4])
end
return false
"""

_XADD_ONCE_SHA = hashlib.sha1(_XADD_ONCE.encode()).hexdigest()

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


def _raise(exc: Exception) -> Any:
    async def raising(_r: Any) -> None:
        raise exc

    return raising


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process of that number: not ours to take over
        return True
    return True


def _dumps(entry: dict) -> str:
    """A decision record as compact JSON (orjson: the standard encoder took ~50 us a record, a
    tenth of the hook's whole decision)."""
    return orjson.dumps(entry).decode()


class Spool:
    """The decisions and events waiting for Redis, as one JSON line each in ``SPOOL_FILE``:
    appended to as entries are queued, rewritten whole (a temporary file renamed over it) after
    entries were written to Redis, removed when nothing waits."""

    def __init__(self, state_dir: str | Path, name: str = SPOOL_FILE) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / name
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.dir, prefix=".probe-"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"MIGRATION_GUARD_STATE_DIR={self.dir}: cannot write there ({exc.strerror or exc}); "
                "vetoes queued while Redis is down are kept in this folder: create it for this user "
                "or name another"
            ) from None

    @staticmethod
    def taking_over(state_dir: str | Path, *, worker: bool) -> Spool:
        """The spool of this process (``worker``: one of ``serve --workers N``, a file per process,
        as each rewrites its own), after taking over the spools of processes no longer running (the
        workers of an earlier run, or a single-process run's file)."""
        spool = Spool(state_dir, f"pending-events-{os.getpid()}.jsonl" if worker else SPOOL_FILE)
        for path in sorted(spool.dir.glob("pending-events*.jsonl")):
            pid = path.name.removeprefix("pending-events").removesuffix(".jsonl").lstrip("-")
            if path == spool.path or (pid.isdigit() and _running(int(pid))):
                continue
            claim = spool.dir / f".claim-{os.getpid()}-{path.name}"
            try:
                os.rename(path, claim)  # one process wins the file; the others skip it
            except OSError:
                continue
            for entry in Spool(spool.dir, claim.name).load():
                spool.append(*entry)
            with contextlib.suppress(OSError):
                claim.unlink()
        return spool

    def load(self) -> list[tuple[str, str, str]]:
        """(stream, id, text) of every entry in the file, oldest first; a damaged line is skipped
        with a warning (the rest still counts)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.error("cannot read the spool %s (%s): queued vetoes in it are not replayed", self.path, exc)
            return []
        out = []
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                out.append((str(entry["stream"]), str(entry["id"]), str(entry["text"])))
            except (ValueError, KeyError, TypeError):
                log.warning("spool %s line %d is damaged and skipped", self.path, number)
        return out

    def append(self, stream: str, ident: str, text: str) -> None:
        """One more entry at the end (written through to disk before returning)."""
        try:
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(json.dumps({"stream": stream, "id": ident, "text": text}) + "\n")
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            log.error("cannot write the spool %s (%s): a queued veto is kept in memory only", self.path, exc)

    def save(self, entries: list[tuple[str, str, str]]) -> None:
        try:
            if not entries:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                return
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".spool-")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    for stream, ident, text in entries:
                        out.write(json.dumps({"stream": stream, "id": ident, "text": text}) + "\n")
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            log.error("cannot write the spool %s (%s): queued vetoes are kept in memory only", self.path, exc)


class EventLog:
    def __init__(self, store: Store, *, keep: int = 10_000, spool: Spool | None = None) -> None:
        self.store = store
        self.keep = keep
        #: (id, text) of what waits for Redis
        self._pending_events: deque[tuple[str, str]] = deque(maxlen=PENDING_LIMIT)
        self._pending_decisions: deque[tuple[str, str]] = deque(maxlen=PENDING_LIMIT)
        #: recent decisions kept in memory too: GET /v1/decisions still answers while Redis is down
        self._recent: deque[dict] = deque(maxlen=PENDING_LIMIT)
        self.dropped = 0
        self._flush_lock = asyncio.Lock()
        self.spool: Spool | None = None
        #: how many entries read from the spool at start are not yet written
        self._from_spool = 0
        if spool is not None:
            self.attach_spool(spool)

    def attach_spool(self, spool: Spool) -> int:
        """Keep what is queued in ``spool`` too, and queue what it holds from an earlier run;
        returns how many entries it held."""
        self.spool = spool
        held = spool.load()
        for stream, ident, text in held:
            queue = self._pending_events if stream == EVENTS_STREAM else self._pending_decisions
            queue.append((ident, text))
        self._from_spool = len(held)
        if held:
            log.warning(
                "%d decisions/veto events queued while Redis was down were read from %s; "
                "they are written once Redis answers",
                len(held),
                spool.path,
            )
        return len(held)

    def _save_spool(self) -> None:
        if self.spool is not None:
            self.spool.save(
                [(DECISIONS_STREAM, i, t) for i, t in self._pending_decisions]
                + [(EVENTS_STREAM, i, t) for i, t in self._pending_events]
            )

    @property
    def pending(self) -> int:
        return len(self._pending_events) + len(self._pending_decisions)

    async def record(self, decision: dict) -> bool:
        """Append a decision to the audit log; False when it was queued (Redis down)."""
        self._recent.appendleft(decision)
        text = _dumps(decision)
        ident = str(decision.get("id") or new_id())
        await self.flush()
        if self._pending_decisions:
            self._queue(self._pending_decisions, ident, text)
            return False
        try:
            await self._xadd(DECISIONS_STREAM, ident, text, self.keep)
        except StoreUnavailable:
            self._queue(self._pending_decisions, ident, text)
            return False
        return True

    async def record_and_publish(self, decision: dict, event: VetoEvent | None) -> tuple[bool, bool]:
        """``record(decision)`` and, when given, ``publish(event)`` in one round trip to the store
        (the hook's path: a veto is both); (recorded, published), False when queued (Redis down)."""
        if self.pending:
            await self.flush()
            if self.pending:  # keep the order: behind what waits
                recorded = await self.record(decision)
                return recorded, (await self.publish(event)) if event is not None else True
        self._recent.appendleft(decision)
        items = [(DECISIONS_STREAM, str(decision.get("id") or new_id()), _dumps(decision), self.keep)]
        if event is not None:
            items.append((EVENTS_STREAM, str(event.get("id") or new_id()), encode_event(event), 100_000))
        try:
            await self._xadd_many(items)
        except StoreUnavailable:  # replaying what may have been written is a no-op (markers)
            for stream, ident, text, _ in items:
                queue = self._pending_events if stream == EVENTS_STREAM else self._pending_decisions
                self._queue(queue, ident, text)
            return False, event is None
        return True, True

    async def publish(self, event: VetoEvent | DriftEvent) -> bool:
        """Publish a veto (or drift) event; False when it was queued for later (Redis down)."""
        text = encode_event(event)
        ident = str(event.get("id") or new_id())
        await self.flush()
        if self._pending_events:
            self._queue(self._pending_events, ident, text)
            return False
        try:
            await self._xadd(EVENTS_STREAM, ident, text, 100_000)
        except StoreUnavailable:
            self._queue(self._pending_events, ident, text)
            return False
        return True

    def _queue(self, queue: deque[tuple[str, str]], ident: str, text: str) -> None:
        if len(queue) == queue.maxlen:
            self.dropped += 1
            log.error("more than %d entries wait for Redis: the oldest is dropped", PENDING_LIMIT)
        queue.append((ident, text))
        if self.spool is not None:
            stream = DECISIONS_STREAM if queue is self._pending_decisions else EVENTS_STREAM
            self.spool.append(stream, ident, text)
            log.warning(
                "Redis is down: %s %s spooled to %s (%d waiting)",
                "veto event" if queue is self._pending_events else "decision",
                ident,
                self.spool.path,
                self.pending,
            )

    async def flush(self) -> int:
        """Write what was queued while Redis was down; returns how many went out."""
        if not self.pending:
            return 0
        async with self._flush_lock:
            return await self._flush()

    async def _flush(self) -> int:
        sent = 0
        try:
            for queue, stream, keep in (
                (self._pending_decisions, DECISIONS_STREAM, self.keep),
                (self._pending_events, EVENTS_STREAM, 100_000),
            ):
                while queue:
                    ident, text = queue[0]
                    try:
                        await self._xadd(stream, ident, text, keep)
                    except StoreUnavailable:
                        return sent
                    if queue:
                        queue.popleft()
                    sent += 1
            return sent
        finally:
            if sent:
                self._save_spool()
                replayed = min(sent, self._from_spool)
                self._from_spool -= replayed
                log.info(
                    "Redis is back: wrote %d queued decisions/veto events (%d of them from the spool of "
                    "an earlier run), %d still waiting",
                    sent,
                    replayed,
                    self.pending,
                )

    async def _xadd(self, stream: str, ident: str, text: str, keep: int) -> None:
        field = EVENT_FIELD if stream == EVENTS_STREAM else "decision"
        if self.store.kind != "redis":  # the embedded store: no scripts, and it never goes down
            await self.store.run(lambda r: r.xadd(stream, {field: text}, maxlen=keep, approximate=True))
            return
        await self._xadd_many([(stream, ident, text, keep)])

    async def _xadd_many(self, items: list[tuple[str, str, str, int]]) -> None:
        """Each (stream, id, text, keep) written once (its marker) in one pipelined round trip
        shared with the other writers of the moment (``Store.batched``); the script by its SHA
        (loaded when Redis does not know it: a restart, a failover)."""

        def add(pipe: Any, items: list = items) -> None:
            for stream, ident, text, keep in items:
                field = EVENT_FIELD if stream == EVENTS_STREAM else "decision"
                if self.store.kind != "redis":  # the embedded store: no scripts, never down
                    pipe.xadd(stream, {field: text}, maxlen=keep, approximate=True)
                    continue
                marker = f"{stream}:written:{ident}"
                pipe.evalsha(_XADD_ONCE_SHA, 2, stream, marker, WRITTEN_MARKER_S, keep, field, text)

        results = await self.store.batched(add)
        if any(isinstance(r, redis_errors.NoScriptError) for r in results):
            # Redis does not know the script (a restart, a failover): load it, write again (the
            # markers make a second write of an entry already written a no-op)
            await self.store.run(lambda r: r.script_load(_XADD_ONCE))
            results = await self.store.batched(add)
        failed = next((r for r in results if isinstance(r, Exception)), None)
        if failed is not None:
            await self.store.run(_raise(failed))  # the store's one mapping of a refused command

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
