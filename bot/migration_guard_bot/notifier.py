"""Tells the team: posts each veto from the Redis stream ``migration-guard:events`` to Slack.

Delivery, one event at a time and in stream order (so per VM in order):

1. read with the consumer group ``slack-notifier`` (consumer ``<hostname>-<pid>``);
2. if the event is already recorded as posted, just acknowledge it (a crash after the post);
3. post it (``chat.postMessage``, with message metadata ``migration_guard_veto`` carrying the event
   id), retrying for as long as it takes: a 429 waits the Retry-After Slack asked for, a 5xx or a
   network error backs off exponentially; blocks Slack refuses as invalid are re-sent as plain text;
4. in ONE Redis transaction: record "posted" (event id -> Slack ts, kept 7 days), remember the
   thread of this (VM, target) for 10 minutes, and XACK.

A crash before step 4 leaves the event pending and it is delivered again after the restart. Slack
may have accepted the post already (the process died between the post and step 4, or the answer
of ``chat.postMessage`` was lost: timeout, dropped connection). So before posting an entry that may
be in Slack already -- one redelivered after a restart or taken over from a dead consumer, or a
retry after a post whose answer never came -- the notifier looks in the channel for a message whose
metadata carries the event id (``conversations.history`` since 10 minutes before the event, and
``conversations.replies`` of the thread it would go into). Found: step 4 with that message's ts,
nothing is posted. The first delivery of a new entry makes no such lookup (no extra Slack call).
The lookup needs ``channels:history`` (``groups:history`` for a private channel); when Slack
refuses it or cannot be asked, the notifier says so once and posts anyway: exactly once with the
scope, at least once without it; never lost.

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

import http.client
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from migration_guard.store.stream import EVENTS_STREAM, decode_event
from migration_guard_bot import blocks as bk
from migration_guard_bot.answers import Answer, verdict_answer
from migration_guard_bot.messages import clip

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
#: chat.update answers meaning the message is gone (deleted, or the channel): post a new one
_GONE_ERRORS = {"message_not_found", "cant_update_message", "channel_not_found", "is_archived"}
#: Slack errors about our message body: re-send as plain text instead of retrying forever
_BODY_ERRORS = {"invalid_blocks", "invalid_blocks_format", "msg_too_long", "invalid_attachments"}
#: the Slack message metadata every veto carries: {"event_type": ..., "event_payload": {"event_id": id}}
VETO_EVENT_TYPE = "migration_guard_veto"
#: a lookup starts this long before the event (or the first post attempt): the clocks of the
#: service, the bot and Slack may differ
LOOKUP_MARGIN_S = 600
LOOKUP_PAGE = 200
#: at most this many pages (of LOOKUP_PAGE messages) are searched per place; then it is posted
LOOKUP_MAX_PAGES = 10
#: a rate-limited lookup waits Retry-After and asks again, this many times in all
LOOKUP_TRIES = 3
#: lookup refusals an operator fixes in the Slack app (scope, membership), not by waiting
_ACCESS_ERRORS = {
    "missing_scope",
    "not_allowed_token_type",
    "no_permission",
    "not_in_channel",
    "channel_not_found",
    "access_denied",
}
#: no answer from Slack: the request may or may not have been carried out
_TRANSPORT_ERRORS = (SlackClientError, OSError, ValueError, http.client.HTTPException)
#: HTTP answers of chat.postMessage after which Slack may still have posted (its edge gave up waiting)
_UNSURE_STATUSES = {504}
_HISTORY_HINT = (
    "add channels:history (and groups:history for a private channel) to the Slack app so a "
    "restarted bot can tell a veto it already posted; posting again"
)
#: kinds of lookup failure already warned about: one warning each per process
_warned: set[str] = set()


class Stopped(Exception):
    """The notifier was asked to stop while an event was in flight (it stays pending)."""


class LookupFailed(Exception):
    """Slack could not be asked whether a veto is in the channel already.

    ``kind``: ``"access"`` (the app lacks a scope or channel membership) or ``"transient"``."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a veto is in Slack: its ``ts``, the thread it is in (None: top level), and whether
    it was found there (posted earlier) rather than posted now."""

    ts: str
    thread_ts: str | None
    found: bool = False


@dataclass(frozen=True, slots=True)
class Veto:
    entry_id: str
    event_id: str
    body: dict[str, Any]

    @property
    def thread_key(self) -> str:
        b = self.body
        return "{}:{}:{}:{}".format(
            b.get("source_cluster") or "", b.get("vmid"), b.get("target_cluster") or "", b.get("target")
        )


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def parse_entry(entry_id: str, fields: dict[str, str] | None) -> Veto | None:
    """A stream entry -> Veto, or None when it is not a readable veto event."""
    body = decode_event(fields)
    if body is None:
        return None
    return Veto(entry_id, str(body.get("id") or entry_id), body)


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
        self.retry_after_max_s = retry_after_max_s
        self.clock = clock
        self.stop_event = threading.Event()
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
        count, since = _repeat(veto.body)
        delivery = None
        if redelivered:
            # an earlier attempt may have posted it (when no run's message was known then)
            event_time = _event_time(veto.body)
            oldest = None if event_time is None else min(event_time, self.clock()) - LOOKUP_MARGIN_S
            delivery = self.find_posted(veto, None, oldest)
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
            delivery = self.post(veto, None)  # found=True: this very post, its answer lost
            self.posted += 1
        self._record(veto, entry_id, posted_key, thread_key, delivery.thread_ts or delivery.ts, count or 1)
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
        if count > shown and not self.update(veto, message_ts, count, since):  # the message is gone
            log.warning(
                "the Slack message %s of VM %s to %s is gone (deleted?); posting veto %s anew",
                message_ts,
                veto.body.get("vmid"),
                veto.body.get("target"),
                veto.event_id,
            )
            ts = self.post(veto, None).ts
            self.posted += 1
        self._record(veto, entry_id, posted_key, thread_key, ts, max(count, shown))
        return ts

    def message(self, veto: Veto) -> Answer:
        """The veto's message; with a running count over 1, the count and what HA does about it."""
        answer = verdict_answer(veto.body, veto=True)
        count, since = _repeat(veto.body)
        if not count or count < 2:
            return answer
        line = repeat_line(count, since)
        blocks = list(answer.blocks)
        blocks.insert(1, bk.section(f"*{line}*"))
        return Answer(text=f"{answer.text} {line}.", blocks=blocks)

    def update(self, veto: Veto, ts: str, count: int, since: str | None) -> bool:
        """chat.update of the run's message until Slack accepts it (an edit sets the whole message:
        safe to repeat). False when the message is gone. Raises Stopped on stop."""
        body = dict(veto.body, repeat={"count": count, "since": since})
        message = self.message(Veto(veto.entry_id, veto.event_id, body))
        text, blocks = message.text, message.blocks
        attempt = 0
        while True:
            if self.stop_event.is_set():
                raise Stopped
            try:
                # blocks always given: without them Slack would keep the old blocks (and count)
                self.slack.chat_update(channel=self.channel, ts=ts, text=clip(text, 3000), blocks=blocks)
                return True
            except SlackApiError as exc:
                status = exc.response.status_code
                error = _slack_error(exc)
                if status == 429:
                    wait = _retry_after(exc.response.headers, self.retry_after_max_s)
                    log.warning("Slack rate limit (429) editing message %s; waiting %.0f s", ts, wait)
                    if self.stop_event.wait(wait):
                        raise Stopped from None
                    continue
                if status == 200 and error in _GONE_ERRORS:
                    return False
                if status == 200 and error in _BODY_ERRORS and blocks:
                    log.error("Slack refused the blocks of message %s (%s); sending plain text", ts, error)
                    blocks = []
                    continue
                wait = self._backoff(attempt)
                log.warning(
                    "Slack refused the edit of message %s for veto %s (HTTP %s, %s); retrying in %.1f s",
                    ts,
                    veto.event_id,
                    status,
                    error or "no error code",
                    wait,
                )
            except _TRANSPORT_ERRORS as exc:
                wait = self._backoff(attempt)
                log.warning(
                    "cannot reach Slack editing message %s (%s); retrying in %.1f s",
                    ts,
                    type(exc).__name__,
                    wait,
                )
            attempt += 1
            if self.stop_event.wait(wait):
                raise Stopped

    def post(self, veto: Veto, thread_ts: str | None) -> Delivery:
        """chat.postMessage until Slack accepts it. Raises Stopped on stop.

        After an attempt whose answer never came (timeout, dropped connection, 504) the message
        may be in Slack: the channel is searched for it before the next attempt, and a message
        found there is returned (``found=True``) instead of posting a second one."""
        message = self.message(veto)
        text, blocks = message.text, message.blocks
        metadata = {"event_type": VETO_EVENT_TYPE, "event_payload": {"event_id": veto.event_id}}
        started = self.clock()
        attempt = 0
        unsure = False  # the last attempt may have reached Slack
        while True:
            if self.stop_event.is_set():
                raise Stopped
            if unsure:
                found = self.find_posted(veto, thread_ts, started - LOOKUP_MARGIN_S)
                if found is not None:
                    log.info(
                        "veto %s reached Slack although its answer was lost (ts %s); not posting it again",
                        veto.event_id,
                        found.ts,
                    )
                    return found
                unsure = False
            try:
                kwargs: dict[str, Any] = {
                    "channel": self.channel,
                    "text": clip(text, 3000),
                    "unfurl_links": False,
                    "unfurl_media": False,
                    "metadata": metadata,
                }
                if blocks:
                    kwargs["blocks"] = blocks
                if thread_ts:
                    kwargs["thread_ts"] = thread_ts
                resp = self.slack.chat_postMessage(**kwargs)
                return Delivery(str(resp["ts"]), thread_ts)
            except SlackApiError as exc:
                status = exc.response.status_code
                error = _slack_error(exc)
                if status == 429:
                    wait = _retry_after(exc.response.headers, self.retry_after_max_s)
                    log.warning(
                        "Slack rate limit (429) posting veto %s; waiting %.0f s as asked", veto.event_id, wait
                    )
                    if self.stop_event.wait(wait):
                        raise Stopped from None
                    continue
                elif status == 200 and error in _BODY_ERRORS and blocks:
                    log.error(
                        "Slack refused the blocks of veto %s (%s); sending plain text", veto.event_id, error
                    )
                    blocks = []
                    continue
                else:
                    unsure = status in _UNSURE_STATUSES
                    wait = self._backoff(attempt)
                    log.warning(
                        "Slack refused veto %s (HTTP %s, %s); retrying in %.1f s",
                        veto.event_id,
                        status,
                        error or "no error code",
                        wait,
                    )
            except _TRANSPORT_ERRORS as exc:
                unsure = True
                wait = self._backoff(attempt)
                log.warning(
                    "cannot reach Slack posting veto %s (%s); retrying in %.1f s",
                    veto.event_id,
                    type(exc).__name__,
                    wait,
                )
            attempt += 1
            if self.stop_event.wait(wait):
                raise Stopped

    # --- is it in Slack already? ----------------------------------------------------------

    def find_posted(
        self, veto: Veto, thread_ts: str | None, oldest: float | None, *, top_level_too: bool = False
    ) -> Delivery | None:
        """The message of this veto if it is in the channel (its metadata carries the event id).

        Searched: the thread ``thread_ts`` (``conversations.replies``) when given, else -- or also,
        with ``top_level_too`` -- the top-level messages since ``oldest`` (``conversations.history``,
        no bound when None). None when not found, and when Slack refused the lookup or could not
        be asked (warned once per process; the caller posts: at least once, never lost).
        Raises Stopped on stop."""
        try:
            if thread_ts:
                hit = self._search(veto, thread_ts, None)
                if hit is not None or not top_level_too:
                    return hit
            return self._search(veto, None, oldest)
        except LookupFailed as exc:
            self._lookup_failed(veto, exc)
            return None

    def _search(self, veto: Veto, thread_ts: str | None, oldest: float | None) -> Delivery | None:
        cursor: str | None = None
        for _page in range(LOOKUP_MAX_PAGES):
            reply = self._lookup(thread_ts, oldest, cursor)
            for msg in reply.get("messages") or []:
                if isinstance(msg, dict) and _carries(msg, veto.event_id):
                    ts = str(msg.get("ts"))
                    root = msg.get("thread_ts")
                    return Delivery(ts, str(root) if root and str(root) != ts else None, found=True)
            cursor = (reply.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return None
        log.info(
            "veto %s is not among the %d messages searched in %s (more there); posting it",
            veto.event_id,
            LOOKUP_MAX_PAGES * LOOKUP_PAGE,
            f"the thread {thread_ts}" if thread_ts else "the channel",
        )
        return None

    def _lookup(self, thread_ts: str | None, oldest: float | None, cursor: str | None) -> Any:
        """One page of conversations.replies (``thread_ts``) or conversations.history."""
        tries = 0
        while True:
            if self.stop_event.is_set():
                raise Stopped
            tries += 1
            try:
                if thread_ts:
                    return self.slack.conversations_replies(
                        channel=self.channel,
                        ts=thread_ts,
                        include_all_metadata=True,
                        limit=LOOKUP_PAGE,
                        cursor=cursor,
                    )
                return self.slack.conversations_history(
                    channel=self.channel,
                    oldest=None if oldest is None or oldest <= 0 else f"{oldest:.6f}",
                    include_all_metadata=True,
                    limit=LOOKUP_PAGE,
                    cursor=cursor,
                )
            except SlackApiError as exc:
                status, error = exc.response.status_code, _slack_error(exc)
                if status == 429 and tries < LOOKUP_TRIES:
                    if self.stop_event.wait(_retry_after(exc.response.headers, self.retry_after_max_s)):
                        raise Stopped from None
                    continue
                if status == 200 and error == "thread_not_found":  # the thread is gone, and ours with it
                    return {"messages": []}
                if status == 200 and error in _ACCESS_ERRORS:
                    data = exc.response.data if isinstance(exc.response.data, dict) else {}
                    needed = data.get("needed")
                    raise LookupFailed(
                        "access", f"Slack: {error}" + (f", needs {needed}" if needed else "")
                    ) from exc
                raise LookupFailed("transient", f"HTTP {status}, {error or 'no error code'}") from exc
            except _TRANSPORT_ERRORS as exc:
                raise LookupFailed("transient", type(exc).__name__) from exc

    def _lookup_failed(self, veto: Veto, exc: LookupFailed) -> None:
        if exc.kind in _warned:
            log.info(
                "cannot look in channel %s for veto %s (%s); posting it, it may show twice",
                self.channel,
                veto.event_id,
                exc.reason,
            )
            return
        _warned.add(exc.kind)
        if exc.kind == "access":
            log.warning(
                "cannot look in channel %s whether veto %s is there already (%s): %s "
                "(said once; until the scope is added and the app reinstalled, a veto may show twice "
                "after a restart)",
                self.channel,
                veto.event_id,
                exc.reason,
                _HISTORY_HINT,
            )
        else:
            log.warning(
                "cannot look in channel %s whether veto %s is there already (%s); posting it again, "
                "so it may show twice (said once; further lookup failures are logged at info level)",
                self.channel,
                veto.event_id,
                exc.reason,
            )

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_max_s, self.backoff_base_s * 2 ** min(attempt, 10))


def repeat_line(count: int, since: str | None) -> str:
    """``blocked 14 times since 10:02 UTC; HA retries until the node leaves maintenance or the CPU
    type changes``."""
    when = _event_time({"time": since}) if since else None
    start = f" since {time.strftime('%H:%M', time.gmtime(when))} UTC" if when is not None else ""
    return (
        f"blocked {count} times{start}; HA retries until the node leaves maintenance or the CPU type changes"
    )


def _repeat(body: dict[str, Any]) -> tuple[int | None, str | None]:
    """The service's running count of this veto's run and when it began (None, None: not given)."""
    repeat = body.get("repeat")
    if not isinstance(repeat, dict):
        return None, None
    count = repeat.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        return None, None
    since = repeat.get("since")
    return count, since if isinstance(since, str) else None


def _slack_error(exc: SlackApiError) -> str:
    data = getattr(exc.response, "data", None)
    return str(data.get("error") or "") if isinstance(data, dict) else ""


def _carries(message: dict[str, Any], event_id: str) -> bool:
    """Does this Slack message carry the metadata of the veto ``event_id``?"""
    meta = message.get("metadata")
    if not isinstance(meta, dict) or meta.get("event_type") != VETO_EVENT_TYPE:
        return False
    payload = meta.get("event_payload")
    return isinstance(payload, dict) and str(payload.get("event_id")) == event_id


def _event_time(body: dict[str, Any]) -> float | None:
    """The event's ``time`` (ISO 8601; UTC when it names no zone) as epoch seconds, or None."""
    raw = body.get("time")
    if not isinstance(raw, str):
        return None
    try:
        when = datetime.fromisoformat(raw.strip())
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def _retry_after(headers: Any, cap: float) -> float:
    value = None
    if headers:
        for k, v in dict(headers).items():
            if str(k).lower() == "retry-after":
                value = v[0] if isinstance(v, list) else v
    try:
        return max(0.0, min(cap, float(value))) if value is not None else 1.0
    except (TypeError, ValueError):
        return 1.0


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
