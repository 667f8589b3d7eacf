"""A veto (or a drift event) as the notifier reads it from the stream, and the Slack message that
shows it.

``parse_entry`` turns a stream entry into a ``Veto`` (the schema is ``migration_guard.store.stream``'s);
``veto_message`` renders it (the verdict answer, with the running count of a run of repeats).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from migration_guard.store.stream import DRIFT_KIND, decode_event
from migration_guard_bot import blocks as bk
from migration_guard_bot.answers import Answer, verdict_answer
from migration_guard_bot.ask.overrides import override_message
from migration_guard_bot.drift_post import drift_message
from migration_guard_bot.messages import code


@dataclass(frozen=True, slots=True)
class Veto:
    entry_id: str
    event_id: str
    body: dict[str, Any]

    @property
    def is_drift(self) -> bool:
        """A drift event (a node's CPU facts changed), not a veto: posted once, never edited."""
        return self.body.get("kind") == DRIFT_KIND

    @property
    def thread_key(self) -> str:
        """The (VM, target) of this veto: its run of repeats shares one Slack message. A drift
        event has a message of its own."""
        b = self.body
        if self.is_drift:
            return f"drift:{self.event_id}"
        return "{}:{}:{}:{}".format(
            b.get("source_cluster") or "", b.get("vmid"), b.get("target_cluster") or "", b.get("target")
        )


def parse_entry(entry_id: str, fields: dict[str, str] | None) -> Veto | None:
    """A stream entry -> Veto, or None when it is not a readable veto event."""
    body = decode_event(fields)
    if body is None:
        return None
    return Veto(entry_id, str(body.get("id") or entry_id), body)


def veto_message(veto: Veto, override: dict[str, Any] | None = None) -> Answer:
    """The veto's message; with a running count over 1, the count and what HA does about it; with
    ``override`` (one asked for this VM and target) its state and, while pending, an Approve
    button; without, how to ask for one (an enforced veto only). A drift event's message is
    drift_post's."""
    if veto.is_drift:
        return drift_message(veto.body)
    answer = verdict_answer(veto.body, veto=True)
    count, since = repeat_of(veto.body)
    blocks = list(answer.blocks)
    text = answer.text
    if count and count >= 2:
        line = repeat_line(count, since)
        blocks.insert(1, bk.section(f"*{line}*"))
        text = f"{text} {line}."
    if override is not None:
        shown = override_message(override)
        # the button's block says it sits on a veto message: an approval redraws the whole veto
        drawn = [dict(b, block_id="veto-" + b["block_id"]) if b.get("block_id") else b for b in shown.blocks]
        blocks += [bk.divider(), *drawn]
        text = f"{text} {shown.text}"
    elif veto.body.get("enforced", True) and veto.body.get("vmid") is not None:
        ask = f"override {veto.body.get('vmid')} to {veto.body.get('target')} because …"
        blocks.append(bk.context(f"Know better? {code(ask)} asks for one pass; a second person approves."))
    return Answer(text=text, blocks=blocks)


def repeat_line(count: int, since: str | None) -> str:
    """``blocked 14 times since 10:02 UTC; HA retries until the node leaves maintenance or the CPU
    type changes``."""
    when = event_time({"time": since}) if since else None
    start = f" since {time.strftime('%H:%M', time.gmtime(when))} UTC" if when is not None else ""
    return (
        f"blocked {count} times{start}; HA retries until the node leaves maintenance or the CPU type changes"
    )


def repeat_of(body: dict[str, Any]) -> tuple[int | None, str | None]:
    """The service's running count of this veto's run and when it began (None, None: not given)."""
    repeat = body.get("repeat")
    if not isinstance(repeat, dict):
        return None, None
    count = repeat.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        return None, None
    since = repeat.get("since")
    return count, since if isinstance(since, str) else None


def event_time(body: dict[str, Any]) -> float | None:
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
