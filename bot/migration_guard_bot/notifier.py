"""Tells the team: posts each veto from the Redis stream ``migration-guard:events`` to Slack.

Delivery, one event at a time and in stream order (so per VM in order):

1. read with the consumer group ``slack-notifier`` (consumer ``<hostname>-<pid>``);
2. if the event is already recorded as posted, just acknowledge it (a crash after the post);
3. post it (``chat.postMessage`` with message metadata ``migration_guard_veto`` carrying the event
   id; ``slack_delivery.py`` retries for as long as it takes);
4. in ONE Redis transaction: record "posted" (event id -> Slack ts, kept 7 days), remember the
   message of this (VM, target) for 10 minutes, and XACK.

A crash before step 4 leaves the event pending and it is delivered again after the restart. Slack
may have accepted the post already (the process died between the post and step 4). So before
posting an entry that may be in Slack already -- one redelivered after a restart or taken over from
a dead consumer -- the notifier asks ``slack_delivery`` to look in the channel for a message whose
metadata carries the event id (since 10 minutes before the event). Found: step 4 with that
message's ts, nothing is posted. The first delivery of a new entry makes no such lookup (no extra
Slack call). When the lookup is refused or fails, the veto is posted anyway: never lost.

After a restart the notifier first drains its own pending entries, then takes over the pending
entries of dead consumers: at once for consumers of this host whose process is gone, and with
XAUTOCLAIM after ``claim_idle_s`` for any other consumer.

Repeated vetoes of the same VM to the same target (HA's CRM retries a vetoed migration every
round, ~10 s, while the source node is in maintenance) do not post again: the one message of that VM
and target is edited in place (``chat.update``) to show the running count the service put in the
event (``repeat``: ``{"count", "since"}``): "blocked 14 times since 10:02 UTC; HA retries until the
node leaves maintenance or the CPU type changes". Such an event is delivered once the message shows
its count or a higher one: its "posted" record (the message's ts), the highest count shown and the
XACK are written in one transaction after the edit; an edit is idempotent (the whole message is set),
so a crash before the transaction only edits again. A run ends after 10 minutes without a veto (or
when the service starts counting anew); the next veto posts a new message. A message deleted in
Slack is replaced by a new post.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from slack_sdk import WebClient

from migration_guard.store.stream import EVENTS_STREAM
from migration_guard_bot.override_links import VETO_KEY, shown_override
from migration_guard_bot.slack_delivery import LOOKUP_MARGIN_S, SlackDelivery, Stopped
from migration_guard_bot.veto import Veto, event_time, parse_entry, repeat_of

__all__ = ["GROUP", "POSTED_KEY", "SHOWN_KEY", "STREAM", "THREAD_KEY", "Notifier", "parse_entry"]

log = logging.getLogger(__name__)

STREAM = EVENTS_STREAM
GROUP = "slack-notifier"
POSTED_KEY = "migration-guard:slack:posted:{id}"
#: the one message of a (VM, target) run of vetoes: its ts (the name is from when repeats were replies)
THREAD_KEY = "migration-guard:slack:thread:{key}"
#: the highest running count that message shows
SHOWN_KEY = "migration-guard:slack:shown:{key}"
POSTED_TTL_S = 7 * 24 * 3600
REPEAT_WINDOW_S = 600
#: on the very first start (no group yet), vetoes older than this are history, not news
FIRST_START_LOOKBACK_S = 3600
FORGET_CONSUMER_AFTER_S = 24 * 3600


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Notifier:
    def __init__(
        self,
        store: redis.Redis,
        slack: WebClient,
        channel: str,
        *,
        consumer: str | None = None,
        block_ms: int = 2000,
        claim_idle_s: float = 30.0,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        retry_after_max_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.slack = slack
        self.channel = channel
        self.consumer = consumer or consumer_name()
        self.block_ms = block_ms
        self.claim_idle_s = claim_idle_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.clock = clock
        self.stop_event = threading.Event()
        self.delivery = SlackDelivery(
            slack,
            channel,
            self.stop_event,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            retry_after_max_s=retry_after_max_s,
            clock=clock,
        )
        self.posted = 0

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        """Until ``stop_event`` is set: deliver every event. Redis outages are waited out."""
        log.info("notifier %s posting vetoes from %s to %s", self.consumer, STREAM, self.channel)
        recovered = False
        last_claim = 0.0
        failures = 0
        while not self.stop_event.is_set():
            try:
                if not recovered:
                    self.ensure_group()
                    self.recover()
                    self.forget_idle_consumers()
                    recovered = True
                if time.monotonic() - last_claim >= max(self.claim_idle_s / 2, 1.0):
                    self.claim_stale()
                    last_claim = time.monotonic()
                self.read_new()
                failures = 0
            except Stopped:
                break
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # the stream or group vanished (Redis flushed): start over
                    recovered = False
                    continue
                raise
            except redis.RedisError as exc:
                failures += 1
                wait = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(failures, 10))
                log.warning("Redis is not answering (%s); retrying in %.0f s", type(exc).__name__, wait)
                self.stop_event.wait(wait)
        log.info("notifier %s stopped after %d posts", self.consumer, self.posted)

    def stop(self) -> None:
        self.stop_event.set()

    def ensure_group(self) -> bool:
        """Create the consumer group (and stream) if missing; True when it was created now."""
        start = f"{int((self.clock() - FIRST_START_LOOKBACK_S) * 1000)}-0"
        try:
            self.store.xgroup_create(STREAM, GROUP, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        log.info("created consumer group %s on %s", GROUP, STREAM)
        return True

    def recover(self) -> int:
        """After a (re)start: own pending entries, then those of dead consumers on this host.

        All of them may have been posted before the restart: each is looked for in Slack first."""
        done = self._drain(self._own_pending)
        host = socket.gethostname() + "-"
        for info in self.store.xinfo_consumers(STREAM, GROUP):
            name = _s(info.get("name"))
            pid = name[len(host) :] if name.startswith(host) else ""
            if name == self.consumer or not pid.isdigit() or _alive(int(pid)):
                continue
            done += self._take_over(name)
            self.store.xgroup_delconsumer(STREAM, GROUP, name)
            log.info("took over the pending vetoes of %s (process gone)", name)
        return done

    def claim_stale(self) -> int:
        """XAUTOCLAIM entries idle for ``claim_idle_s`` (their consumer died on another host)."""
        done, start = 0, "0-0"
        while True:
            reply = self.store.xautoclaim(
                STREAM,
                GROUP,
                self.consumer,
                min_idle_time=int(self.claim_idle_s * 1000),
                start_id=start,
                count=50,
            )
            start, entries = reply[0], reply[1]
            for entry_id, fields in entries:
                self.handle(_s(entry_id), fields, redelivered=True)
                done += 1
            if _s(start) in ("0-0", "0") or not entries:
                return done

    def forget_idle_consumers(self, idle_s: float = FORGET_CONSUMER_AFTER_S) -> list[str]:
        """Delete consumers with nothing pending that have been idle for a day (old restarts)."""
        gone = []
        for info in self.store.xinfo_consumers(STREAM, GROUP):
            name = _s(info.get("name"))
            if (
                name != self.consumer
                and int(info.get("pending", 1)) == 0
                and int(info.get("idle", 0)) > idle_s * 1000
            ):
                self.store.xgroup_delconsumer(STREAM, GROUP, name)
                gone.append(name)
        return gone

    def read_new(self) -> int:
        reply: Any = self.store.xreadgroup(GROUP, self.consumer, {STREAM: ">"}, count=10, block=self.block_ms)
        done = 0
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                if self.stop_event.is_set():
                    raise Stopped
                self.handle(_s(entry_id), fields)
                done += 1
        return done

    def _own_pending(self) -> list[tuple[Any, Any]]:
        reply: Any = self.store.xreadgroup(GROUP, self.consumer, {STREAM: "0"}, count=100)
        return [e for _s_, entries in reply or [] for e in entries]

    def _take_over(self, name: str) -> int:
        done = 0
        while True:
            pending: Any = self.store.xpending_range(
                STREAM, GROUP, min="-", max="+", count=100, consumername=name
            )
            ids: Any = [p["message_id"] for p in pending]
            if not ids:
                return done
            claimed: Any = self.store.xclaim(STREAM, GROUP, self.consumer, min_idle_time=0, message_ids=ids)
            got = {_s(i) for i, _f in claimed}
            for entry_id, fields in claimed:
                self.handle(_s(entry_id), fields, redelivered=True)
                done += 1
            gone = [i for i in ids if _s(i) not in got]  # deleted from the stream meanwhile
            if gone:
                self.store.xack(STREAM, GROUP, *gone)

    def _drain(self, fetch: Callable[[], list[tuple[Any, Any]]]) -> int:
        done = 0
        while True:
            entries = fetch()
            if not entries:
                return done
            for entry_id, fields in entries:
                self.handle(_s(entry_id), fields, redelivered=True)
                done += 1

    # --- one event -----------------------------------------------------------------------

    def handle(self, entry_id: str, fields: Any, *, redelivered: bool = False) -> str | None:
        """Deliver one entry exactly once; returns the Slack ts (None if skipped).

        ``redelivered``: the entry was read before (by this consumer before a restart, or by a
        consumer that died), so it may be in Slack already: look for it there before posting.
        A new entry (``False``) is posted without asking Slack anything first."""
        veto = parse_entry(entry_id, {_s(k): _s(v) for k, v in (fields or {}).items()})
        if veto is None:
            log.warning(
                "stream entry %s is not a readable veto event; acknowledged without posting", entry_id
            )
            self.store.xack(STREAM, GROUP, entry_id)
            return None
        posted_key = POSTED_KEY.format(id=veto.event_id)
        already = self.store.get(posted_key)
        if already is not None:
            log.info("veto %s was already posted (ts %s); acknowledging", veto.event_id, _s(already))
            self.store.xack(STREAM, GROUP, entry_id)
            return _s(already)
        thread_key = THREAD_KEY.format(key=veto.thread_key)
        raw_message = self.store.get(thread_key)
        message_ts = _s(raw_message) if raw_message else None
        count, since = repeat_of(veto.body)
        delivery = None
        if redelivered:
            # an earlier attempt may have posted it (when no run's message was known then)
            when = event_time(veto.body)
            oldest = None if when is None else min(when, self.clock()) - LOOKUP_MARGIN_S
            delivery = self.delivery.find_posted(veto, oldest)
            if delivery is not None:
                log.info(
                    "veto %s is in Slack already (ts %s, posted by an attempt that died before recording "
                    "it); recording it, not posting it again",
                    veto.event_id,
                    delivery.ts,
                )
                if message_ts is not None and message_ts != delivery.ts:  # another message leads
                    pipe = self.store.pipeline(transaction=True)
                    pipe.set(posted_key, delivery.ts, ex=POSTED_TTL_S)
                    pipe.xack(STREAM, GROUP, entry_id)
                    pipe.execute()
                    return delivery.ts
        if delivery is None and message_ts is not None and count != 1:  # a repeat: edit the run's message
            return self._count_in(veto, entry_id, posted_key, thread_key, message_ts, count, since)
        if delivery is None:
            override = shown_override(self.store, thread_key.removeprefix("migration-guard:slack:thread:"))
            delivery = self.delivery.post(veto, override)  # found=True: this very post, its answer lost
            self.posted += 1
        self._record(veto, entry_id, posted_key, thread_key, delivery.ts, count or 1)
        return delivery.ts

    def _record(
        self, veto: Veto, entry_id: str, posted_key: str, thread_key: str, ts: str, shown: int
    ) -> None:
        """One transaction: the event is posted (as ``ts``), ``ts`` is the run's message showing
        ``shown`` (both kept 10 minutes past this veto), and the entry is acknowledged."""
        pipe = self.store.pipeline(transaction=True)
        pipe.set(posted_key, ts, ex=POSTED_TTL_S)
        pipe.set(thread_key, ts, ex=REPEAT_WINDOW_S)
        pipe.set(SHOWN_KEY.format(key=veto.thread_key), shown, ex=REPEAT_WINDOW_S)
        pipe.set(VETO_KEY.format(key=veto.thread_key), json.dumps(veto.body), ex=REPEAT_WINDOW_S)
        pipe.xack(STREAM, GROUP, entry_id)
        pipe.execute()

    def _count_in(
        self,
        veto: Veto,
        entry_id: str,
        posted_key: str,
        thread_key: str,
        message_ts: str,
        count: int | None,
        since: str | None,
    ) -> str:
        """A repeat: edit the run's message to show ``count`` (the service's running count; without
        one, one more than shown). A message already showing as many or more is left alone."""
        raw = self.store.get(SHOWN_KEY.format(key=veto.thread_key))
        shown = int(_s(raw)) if raw is not None and _s(raw).isdigit() else 1
        if count is None:
            count = shown + 1
        ts = message_ts
        override = shown_override(self.store, veto.thread_key)
        if count > shown and not self.delivery.update(veto, message_ts, count, since, override):  # gone
            log.warning(
                "the Slack message %s of VM %s to %s is gone (deleted?); posting veto %s anew",
                message_ts,
                veto.body.get("vmid"),
                veto.body.get("target"),
                veto.event_id,
            )
            ts = self.delivery.post(veto, override).ts
            self.posted += 1
        self._record(veto, entry_id, posted_key, thread_key, ts, max(count, shown))
        return ts


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
