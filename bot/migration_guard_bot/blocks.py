"""Block Kit building blocks. Callers pass text that is already made safe by migration_guard_bot.messages.

Every mrkdwn object sets ``verbatim: true`` (no auto-linking of @channel, #channel or URLs)
and text is clipped to Slack's limits so a huge reason list never makes Slack refuse a post.
"""

from __future__ import annotations

from typing import Any

from migration_guard_bot.messages import SECTION_MAX, clip

Block = dict[str, Any]


def mrkdwn(text: str, limit: int = SECTION_MAX) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": clip(text, limit) or " ", "verbatim": True}


def section(text: str) -> Block:
    return {"type": "section", "text": mrkdwn(text)}


def fields(*pairs: tuple[str, str]) -> Block:
    """Up to 10 two-column fields, each ``*label*\\nvalue``."""
    return {"type": "section", "fields": [mrkdwn(f"*{k}*\n{v}", 2000) for k, v in pairs[:10]]}


def context(*texts: str) -> Block:
    return {"type": "context", "elements": [mrkdwn(t, 2000) for t in texts[:10] if t]}


def divider() -> Block:
    return {"type": "divider"}


def header(text: str) -> Block:
    """Plain-text header: only for our own words, never for Proxmox strings."""
    return {"type": "header", "text": {"type": "plain_text", "text": clip(text, 150), "emoji": True}}


def bullets(lines: list[str], limit: int = 20) -> str:
    shown = [f"• {line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"… and {len(lines) - limit} more")
    return "\n".join(shown)


def button(text: str, action_id: str, value: str, *, style: str | None = None) -> dict[str, Any]:
    """An interactive button (our own words; ``value`` comes back in the signed action request)."""
    out: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": clip(text, 75), "emoji": True},
        "value": clip(value, 2000),
    }
    if style:
        out["style"] = style
    return out


def actions(block_id: str, *elements: dict[str, Any]) -> Block:
    return {"type": "actions", "block_id": block_id, "elements": list(elements)}
