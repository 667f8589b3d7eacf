"""Posts the evacuation digests: reads the decision log stream (``migration-guard:decisions``, every
decision the hook asked for, allowed or not) and keeps one Slack message per source node and burst
(``digest``), posted once ``min_vms`` VMs of that node were decided with no gap over ``window_s``
(MIGRATION_GUARD_BOT_DIGEST_MIN_VMS, MIGRATION_GUARD_BOT_DIGEST_WINDOW_S) and edited in place
(``chat.update``) as more arrive; a burst without a decision for ``window_s`` is ended (its message
says so once more).

Times are the stream's entry ids (Redis's clock) and Redis's TIME, so the bot's own clock does not
matter. State is in Redis: the cursor (the last entry read), each open burst (JSON) and the set of
open bursts, written in one transaction after Slack took the message: a restarted bot goes on where
it stopped, editing the same messages (an edit sets the whole message, so doing it again is
harmless). A crash between a first post and that transaction posts that digest again.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError

from migration_guard.errors import GuardError
from migration_guard.store.events import DECISIONS_STREAM
from migration_guard_bot import digest
from migration_guard_bot.messages import clip

log = logging.getLogger(__name__)

CURSOR_KEY = "migration-guard:slack:digest:cursor"
BURST_KEY = "migration-guard:slack:digest:burst:{node}"
OPEN_KEY = "migration-guard:slack:digest:open"


class DigestPoster:
    def __init__(
        self,
        store: redis.Redis,
        slack: WebClient,
        channel: str,
        service: Any,
        *,
        window_s: int = 120,
        min_vms: int = 3,
        block_ms: int = 2000,
    ) -> None:
        self.store = store
        self.slack = slack
        self.channel = channel
        self.service = service
        self.window_ms = window_s * 1000
        self.min_vms = min_vms
        self.block_ms = block_ms
        self.stop_event = threading.Event()

    def run(self) -> None:
        log.info("posting evacuation digests to %s (window %d s)", self.channel, self.window_ms // 1000)
        while not self.stop_event.is_set():
            try:
                self.step()
            except redis.RedisError as exc:
                log.warning("Redis is not answering (%s); digests wait", type(exc).__name__)
                self.stop_event.wait(5)

    def stop(self) -> None:
        self.stop_event.set()

    def step(self, block_ms: int | None = None) -> int:
        """Read what arrived (waiting up to ``block_ms``), draw the digests it changes, end the
        bursts that are over; returns how many decisions were read."""
        cursor = self._cursor()
        wait = self.block_ms if block_ms is None else block_ms
        # XREAD BLOCK 0 would wait for ever: no wait is no BLOCK
        reply: Any = self.store.xread({DECISIONS_STREAM: cursor}, count=500, block=wait or None)
        entries = [e for _stream, rows in reply or [] for e in rows]
        touched: dict[str, dict[str, Any]] = {}
        for entry_id, fields in entries:
            cursor = _s(entry_id)
            decision = _decision(fields)
            if decision is None or not decision.get("source") or decision.get("vmid") is None:
                continue
            node = f"{decision.get('source_cluster') or ''}/{decision['source']}"
            at = int(cursor.split("-")[0])
            burst = touched.get(node) or self._burst(node)
            if burst is not None and at - int(burst["last"]) > self.window_ms:
                self._end(node, burst)
                burst = None
            if burst is None:
                burst = digest.new_burst(at)
            digest.add(burst, decision, at)
            touched[node] = burst
        for node, burst in touched.items():
            if len(burst["vms"]) >= self.min_vms:
                self._draw(node, burst)
        pipe = self.store.pipeline(transaction=True)
        for node, burst in touched.items():
            pipe.set(BURST_KEY.format(node=node), json.dumps(burst))
            pipe.sadd(OPEN_KEY, node)
        if entries:
            pipe.set(CURSOR_KEY, cursor)
        pipe.execute()
        self.end_quiet()
        return len(entries)

    def end_quiet(self) -> int:
        """End every open burst without a decision for ``window_s`` (Redis's clock)."""
        secs, micros = self.store.time()
        now = int(secs) * 1000 + int(micros) // 1000
        ended = 0
        for node in sorted(_s(n) for n in self.store.smembers(OPEN_KEY)):
            burst = self._burst(node)
            if burst is None or now - int(burst["last"]) > self.window_ms:
                if burst is not None:
                    self._end(node, burst)
                else:
                    self.store.srem(OPEN_KEY, node)
                ended += 1
        return ended

    # --- one burst ------------------------------------------------------------------------

    def _cursor(self) -> str:
        raw = self.store.get(CURSOR_KEY)
        if raw:
            return _s(raw)
        secs, _micros = self.store.time()  # first start: a burst that just began, not history
        return f"{(int(secs) * 1000) - self.window_ms}-0"

    def _burst(self, node: str) -> dict[str, Any] | None:
        raw = self.store.get(BURST_KEY.format(node=node))
        try:
            burst = json.loads(raw) if raw else None
        except ValueError:
            return None
        return burst if isinstance(burst, dict) and isinstance(burst.get("vms"), dict) else None

    def _end(self, node: str, burst: dict[str, Any]) -> None:
        if burst.get("ts"):
            self._draw(node, burst, ended=True)
        pipe = self.store.pipeline(transaction=True)
        pipe.delete(BURST_KEY.format(node=node))
        pipe.srem(OPEN_KEY, node)
        pipe.execute()

    def _draw(self, node: str, burst: dict[str, Any], *, ended: bool = False) -> None:
        """Post the burst's digest, or edit it; a Slack failure leaves it for the next decision."""
        name = node.split("/", 1)[1]
        if not ended:
            self._stuck(name, burst)
        message = digest.digest_message(name, burst, ended=ended)
        text = clip(message.text, 3000)
        try:
            if burst.get("ts"):
                self.slack.chat_update(channel=self.channel, ts=burst["ts"], text=text, blocks=message.blocks)
            else:
                resp = self.slack.chat_postMessage(
                    channel=self.channel,
                    text=text,
                    blocks=message.blocks,
                    unfurl_links=False,
                    unfurl_media=False,
                )
                burst["ts"] = str(resp["ts"])
        except (SlackClientError, OSError) as exc:
            log.warning(
                "Slack did not take the digest of %s (%s); drawn again with the next decision", node, exc
            )

    def _stuck(self, node: str, burst: dict[str, Any]) -> None:
        """Which blocked VMs have nowhere to go (asked once per blocked VM, from the evacuation)."""
        asked = burst.setdefault("asked", [])
        ask = [r for r in digest.blocked_rows(burst) if str(r["vmid"]) not in asked]
        if not ask:
            return
        try:
            body = self.service.evacuation(node)
        except GuardError as exc:
            log.info("no evacuation answer for %s (%s); the digest names each veto's reason", node, exc)
            return
        stuck = {
            str(s.get("vmid")): s.get("fix") or "" for s in body.get("stuck") or [] if isinstance(s, dict)
        }
        for r in ask:
            asked.append(str(r["vmid"]))
            if str(r["vmid"]) in stuck:
                burst["stuck"][str(r["vmid"])] = stuck[str(r["vmid"])]


def _decision(fields: Any) -> dict[str, Any] | None:
    raw = (fields or {}).get("decision") if isinstance(fields, dict) else None
    try:
        body = json.loads(_s(raw)) if raw is not None else None
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
