"""The veto event stream, once: its name, the field each entry carries, and the event's schema.
The service writes it (``events.EventLog.publish``); the bot's notifier reads it. Standard
library only, so a reader needs nothing else of the store."""

from __future__ import annotations

import json
from typing import Any, NotRequired, TypedDict

#: the Redis stream of veto events
EVENTS_STREAM = "migration-guard:events"
#: the one field of a stream entry: the event as JSON
EVENT_FIELD = "event"


class VetoEvent(TypedDict):
    """One veto, as published (docs/architecture.md, "Veto events")."""

    id: str
    time: str  # ISO 8601 UTC
    vmid: int
    name: str
    source: str | None
    target: str
    source_cluster: str
    target_cluster: str
    cpu: str
    verdict: str  # "deny"
    reasons: list[dict[str, str]]  # {"code", "message"}
    suggestion: Any
    enforced: bool
    #: a veto that repeats (HA retries): the running count of this VM toward this target, and since when
    repeat: NotRequired[dict[str, Any]]


def encode_event(event: VetoEvent | dict[str, Any]) -> str:
    """The entry's field value for ``event``."""
    return json.dumps(event, separators=(",", ":"))


def decode_event(fields: dict[str, str] | None) -> dict[str, Any] | None:
    """The event of a stream entry's fields, or None when the entry holds no readable veto."""
    if not fields or EVENT_FIELD not in fields:
        return None
    try:
        body = json.loads(fields[EVENT_FIELD])
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("vmid") is None:
        return None
    return body
