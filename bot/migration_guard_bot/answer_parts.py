"""``Answer`` (what every answer is: Block Kit + plain-text fallback) and the small readers of the
service's bodies that every answer module uses. Imports nothing of the answers, so the answer
modules (``answers``, ``ask/*``) can all import it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from migration_guard_bot.messages import code, plain, prose


@dataclass(slots=True)
class Answer:
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    #: worth showing to the whole channel (a verdict) or only to the asker (help, errors)
    public: bool = True
    #: an override just requested (OverrideBody): the listener shows it on the veto message too
    override: dict[str, Any] | None = None


def _vm_label(body: dict[str, Any]) -> dict[str, str]:
    vmid, name = body.get("vmid"), body.get("name")
    m = f"VM {vmid}" + (f" {code(name)}" if name else "")
    t = f"VM {vmid}" + (f" ({name})" if name else "")
    return {"m": m, "t": t}


def _cpu_label(cpu: Any) -> str:
    return str(cpu or "")


def _reasons(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The verdict's reasons, then its ``facts`` notes (e.g. a nested node) not already among them."""
    raw = body.get("reasons") or []
    out = [r if isinstance(r, dict) else {"message": str(r)} for r in raw] if isinstance(raw, list) else []
    notes = body.get("facts")
    if isinstance(notes, list):
        out += [n for n in notes if isinstance(n, dict) and n not in out]
    return out


def _lacks(x: Any, mrkdwn: bool, limit: int = 4) -> str:
    missing = x.get("missing") if isinstance(x, dict) else None
    if not missing or not isinstance(missing, list):
        return ""
    shown = [str(m) for m in missing[:limit]] + (
        [f"+{len(missing) - limit} more"] if len(missing) > limit else []
    )
    return " (lacks " + (prose(", ".join(shown)) if mrkdwn else ", ".join(shown)) + ")"


def _when(value: Any) -> str:
    if isinstance(value, (int, float)):
        return datetime.utcfromtimestamp(value).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M UTC")
        except ValueError:
            return plain(value[:40])
    return ""
