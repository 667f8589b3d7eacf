"""Puts vetoes into Slack: ``chat.postMessage`` until Slack accepts it, ``chat.update`` of the one
message of a run of repeats, and the lookup of a veto already posted (its message metadata).

Retries: a 429 waits the Retry-After Slack asked for (capped), a 5xx or a network error backs off
exponentially, for as long as it takes; every wait ends at once when the notifier is stopped
(``Stopped``: the event stays pending). Blocks Slack refuses as invalid are re-sent as plain text.
After an attempt whose answer never came (timeout, dropped connection, 504) the post may be in
Slack: the channel is searched for it before the next attempt.

slack_sdk's retry handlers are not used here (the notifier's WebClient has none): they sleep
without looking at the stop signal, give up after a fixed count, and a connection-error retry
would post again without first looking whether the lost attempt reached Slack.

The lookup (``conversations.history`` with ``include_all_metadata``) needs ``channels:history``
(``groups:history`` for a private channel); when Slack refuses it or cannot be asked, that is said
once per process and the veto is posted anyway: exactly once with the scope, at least once
without it; never lost.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from migration_guard_bot.messages import clip
from migration_guard_bot.veto import Veto, veto_message

log = logging.getLogger(__name__)

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
#: at most this many pages (of LOOKUP_PAGE messages) are searched; then it is posted
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
    """Where a veto is in Slack: its ``ts``, and whether it was found there (posted earlier)
    rather than posted now."""

    ts: str
    found: bool = False


class SlackDelivery:
    """The Slack side of the notifier, for one channel; ``stop_event`` is the notifier's."""

    def __init__(
        self,
        slack: WebClient,
        channel: str,
        stop_event: threading.Event,
        *,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        retry_after_max_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.slack = slack
        self.channel = channel
        self.stop_event = stop_event
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        self.clock = clock

    def post(self, veto: Veto, override: dict[str, Any] | None = None) -> Delivery:
        """chat.postMessage until Slack accepts it. Raises Stopped on stop.

        After an attempt whose answer never came the message may be in Slack: the channel is
        searched for it before the next attempt, and a message found there is returned
        (``found=True``) instead of posting a second one."""
        message = veto_message(veto, override)
        blocks = message.blocks
        metadata = {"event_type": VETO_EVENT_TYPE, "event_payload": {"event_id": veto.event_id}}
        started = self.clock()
        attempt = 0
        unsure = False  # the last attempt may have reached Slack
        while True:
            self._check_stop()
            if unsure:
                found = self.find_posted(veto, started - LOOKUP_MARGIN_S)
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
                    "text": clip(message.text, 3000),
                    "unfurl_links": False,
                    "unfurl_media": False,
                    "metadata": metadata,
                }
                if blocks:
                    kwargs["blocks"] = blocks
                resp = self.slack.chat_postMessage(**kwargs)
                return Delivery(str(resp["ts"]))
            except SlackApiError as exc:
                if self._rate_limited(exc, f"posting veto {veto.event_id}"):
                    continue
                if _refused_body(exc) and blocks:
                    log.error(
                        "Slack refused the blocks of veto %s (%s); sending plain text",
                        veto.event_id,
                        _slack_error(exc),
                    )
                    blocks = []
                    continue
                unsure = exc.response.status_code in _UNSURE_STATUSES
                wait = self._backoff(attempt)
                log.warning("Slack refused veto %s (%s); retrying in %.1f s", veto.event_id, _said(exc), wait)
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
            self._wait(wait)

    def update(
        self, veto: Veto, ts: str, count: int, since: str | None, override: dict[str, Any] | None = None
    ) -> bool:
        """chat.update of the run's message until Slack accepts it (an edit sets the whole message:
        safe to repeat). False when the message is gone. Raises Stopped on stop."""
        body = dict(veto.body, repeat={"count": count, "since": since})
        message = veto_message(Veto(veto.entry_id, veto.event_id, body), override)
        blocks = message.blocks
        attempt = 0
        while True:
            self._check_stop()
            try:
                # blocks always given: without them Slack would keep the old blocks (and count)
                self.slack.chat_update(
                    channel=self.channel, ts=ts, text=clip(message.text, 3000), blocks=blocks
                )
                return True
            except SlackApiError as exc:
                if self._rate_limited(exc, f"editing message {ts}"):
                    continue
                if exc.response.status_code == 200 and _slack_error(exc) in _GONE_ERRORS:
                    return False
                if _refused_body(exc) and blocks:
                    log.error(
                        "Slack refused the blocks of message %s (%s); sending plain text",
                        ts,
                        _slack_error(exc),
                    )
                    blocks = []
                    continue
                wait = self._backoff(attempt)
                log.warning(
                    "Slack refused the edit of message %s for veto %s (%s); retrying in %.1f s",
                    ts,
                    veto.event_id,
                    _said(exc),
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
            self._wait(wait)

    # --- is it in Slack already? ----------------------------------------------------------

    def find_posted(self, veto: Veto, oldest: float | None) -> Delivery | None:
        """The message of this veto if it is in the channel (its metadata carries the event id),
        searched among the top-level messages since ``oldest`` (no bound when None).

        None when not found, and when Slack refused the lookup or could not be asked (warned once
        per process; the caller posts: at least once, never lost). Raises Stopped on stop."""
        try:
            return self._search(veto, oldest)
        except LookupFailed as exc:
            self._lookup_failed(veto, exc)
            return None

    def _search(self, veto: Veto, oldest: float | None) -> Delivery | None:
        cursor: str | None = None
        for _page in range(LOOKUP_MAX_PAGES):
            reply = self._lookup(oldest, cursor)
            for msg in reply.get("messages") or []:
                if isinstance(msg, dict) and _carries(msg, veto.event_id):
                    return Delivery(str(msg.get("ts")), found=True)
            cursor = (reply.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return None
        log.info(
            "veto %s is not among the %d messages searched in the channel (more there); posting it",
            veto.event_id,
            LOOKUP_MAX_PAGES * LOOKUP_PAGE,
        )
        return None

    def _lookup(self, oldest: float | None, cursor: str | None) -> Any:
        """One page of conversations.history; a 429 is waited out LOOKUP_TRIES times in all."""
        tries = 0
        while True:
            self._check_stop()
            tries += 1
            try:
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
                    self._wait(_retry_after(exc.response.headers, self.retry_after_max_s))
                    continue
                if status == 200 and error in _ACCESS_ERRORS:
                    data = exc.response.data if isinstance(exc.response.data, dict) else {}
                    needed = data.get("needed")
                    raise LookupFailed(
                        "access", f"Slack: {error}" + (f", needs {needed}" if needed else "")
                    ) from exc
                raise LookupFailed("transient", _said(exc)) from exc
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

    # --- waiting ----------------------------------------------------------------------------

    def _rate_limited(self, exc: SlackApiError, doing: str) -> bool:
        """A 429: wait the Retry-After Slack asked for (True: ask again). Raises Stopped on stop."""
        if exc.response.status_code != 429:
            return False
        wait = _retry_after(exc.response.headers, self.retry_after_max_s)
        log.warning("Slack rate limit (429) %s; waiting %.0f s as asked", doing, wait)
        self._wait(wait)
        return True

    def _wait(self, seconds: float) -> None:
        if self.stop_event.wait(seconds):
            raise Stopped

    def _check_stop(self) -> None:
        if self.stop_event.is_set():
            raise Stopped

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_max_s, self.backoff_base_s * 2 ** min(attempt, 10))


def _slack_error(exc: SlackApiError) -> str:
    data = getattr(exc.response, "data", None)
    return str(data.get("error") or "") if isinstance(data, dict) else ""


def _said(exc: SlackApiError) -> str:
    """``HTTP 503, no error code``: what Slack answered, for a log line."""
    return f"HTTP {exc.response.status_code}, {_slack_error(exc) or 'no error code'}"


def _refused_body(exc: SlackApiError) -> bool:
    """Slack refused the message body (blocks, length): re-sending it would never succeed."""
    return exc.response.status_code == 200 and _slack_error(exc) in _BODY_ERRORS


def _carries(message: dict[str, Any], event_id: str) -> bool:
    """Does this Slack message carry the metadata of the veto ``event_id``?"""
    meta = message.get("metadata")
    if not isinstance(meta, dict) or meta.get("event_type") != VETO_EVENT_TYPE:
        return False
    payload = meta.get("event_payload")
    return isinstance(payload, dict) and str(payload.get("event_id")) == event_id


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
