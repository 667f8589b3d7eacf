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
