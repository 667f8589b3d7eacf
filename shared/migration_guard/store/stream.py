"""The event stream (vetoes, and drift of a node's CPU facts), once: its name, the field each
entry carries, and the events' schemas. The service writes it (``events.EventLog.publish``); the
bot's notifier reads it. Standard library only, so a reader needs nothing else of the store."""

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


class DriftEvent(TypedDict):
    """A node's CPU facts changed (docs/architecture.md, "Drift events"): ``kind`` tells it from a
    veto, which has none."""

    kind: str  # "drift"
    id: str
    time: str  # ISO 8601 UTC
    cluster: str
    node: str
    appeared: list[str]
    vanished: list[str]
    qemu_before: str | None
    qemu_after: str | None
    changed: dict[str, list[Any]]
    vms_now_blocked: list[dict[str, Any]]
    vms_now_movable: list[dict[str, Any]]


#: ``kind`` of a drift event (a veto event has no ``kind``)
DRIFT_KIND = "drift"


def encode_event(event: VetoEvent | DriftEvent | dict[str, Any]) -> str:
    """The entry's field value for ``event``."""
    return json.dumps(event, separators=(",", ":"))


def decode_event(fields: dict[str, str] | None) -> dict[str, Any] | None:
    """The event of a stream entry's fields, or None when the entry holds no readable veto or
    drift event."""
    if not fields or EVENT_FIELD not in fields:
        return None
    try:
        body = json.loads(fields[EVENT_FIELD])
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if body.get("kind") == DRIFT_KIND:
        return body if isinstance(body.get("node"), str) and body.get("id") else None
    if body.get("vmid") is None:
        return None
    return body
