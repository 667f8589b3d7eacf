"""Audited one-time overrides in Slack: the request (``override 104 to pve-atom1 because ...``)
answered with an Approve button, the list, and the message after an approval or a refusal.

People are recorded as ``slack:<user id>`` (a Slack user, shown as a mention) or as the console
user's name; the service refuses an approval by the requester and says why."""

from __future__ import annotations

import re
from typing import Any

from migration_guard_bot import blocks as bk
from migration_guard_bot.answer_parts import Answer, _when
from migration_guard_bot.messages import code, plain, prose

APPROVE_ACTION = "override_approve"
#: a Slack user as the bot records it (the requester and the approver of an override)
_SLACK_USER = re.compile(r"\Aslack:([UW][A-Z0-9]{2,20})\Z")
_STATUS_ICON = {
    "pending": ":hourglass_flowing_sand:",
    "approved": ":white_check_mark:",
    "spent": ":heavy_check_mark:",
    "expired": ":clock3:",
    "rejected": ":x:",
}


def slack_person(user_id: str) -> str:
    return f"slack:{user_id}"


def who(person: Any) -> tuple[str, str]:
    """(mrkdwn, plain) of a recorded person: a Slack user as a mention, anyone else as code."""
    text = str(person or "?")
    m = _SLACK_USER.match(text)
    if m:
        return f"<@{m.group(1)}>", f"@{m.group(1)}"
    return code(text), text


def override_message(body: dict[str, Any], *, note: str = "") -> Answer:
    """One override as a message: what, why, who asked, its state; an Approve button while it is
    pending. ``note``: a line to add (a refusal the service gave, say)."""
    oid = str(body.get("id") or "")
    status = str(body.get("status") or "pending")
    vm = f"VM {body.get('vmid')}"
    target = str(body.get("target") or "?")
    asked_m, asked_t = who(body.get("requested_by"))
    until = _when(body.get("expires_at"))
    head = {
        "pending": f"Override requested: {vm} to {target}, once",
        "approved": f"Override approved: the next migration of {vm} to {target} passes",
        "spent": f"Override used: {vm} moved to {target} under it",
        "expired": f"Override expired: {vm} to {target} was not approved or used in time",
        "rejected": f"Override rejected: {vm} to {target}",
    }.get(status, f"Override {status}: {vm} to {target}")
    lines_m = [f"*Reason:* {prose(body.get('reason') or '')}", f"*Requested by* {asked_m}"]
    lines_t = [f"Reason: {body.get('reason') or ''}", f"requested by {asked_t}"]
    if body.get("approved_by"):
        by_m, by_t = who(body.get("approved_by"))
        lines_m.append(f"*Approved by* {by_m}")
        lines_t.append(f"approved by {by_t}")
    if status in ("pending", "approved") and until:
        lines_m.append(f"*Valid until* {until}")
        lines_t.append(f"valid until {until}")
    blocks = [
        bk.section(f"*{_STATUS_ICON.get(status, '')} {prose(head)}*\n" + "\n".join(lines_m)),
    ]
    text = head + ". " + "; ".join(lines_t) + "."
    if note:
        blocks.append(bk.section(":warning: " + prose(note)))
        text += " " + note
    if status == "pending" and oid:
        blocks.append(
            bk.actions(f"override:{oid}", bk.button("Approve", APPROVE_ACTION, oid, style="primary"))
        )
        blocks.append(bk.context("A second person approves; the requester cannot. Override " + code(oid)))
        text += " A second person approves it."
    elif oid:
        blocks.append(bk.context("Override " + code(oid)))
    return Answer(text=plain(text), blocks=blocks)


def overrides_answer(rows: list[dict[str, Any]]) -> Answer:
    if not rows:
        line = "No override requests."
        return Answer(text=line, blocks=[bk.section(line)])
    lines_m, lines_t = [], []
    for r in rows[:20]:
        status = str(r.get("status") or "?")
        asked_m, asked_t = who(r.get("requested_by"))
        by = r.get("approved_by")
        lines_m.append(
            f"{_STATUS_ICON.get(status, '')} {status} VM {r.get('vmid')} → {code(r.get('target'))} – "
            f"{prose(r.get('reason') or '')} (asked by {asked_m}"
            + (f", approved by {who(by)[0]}" if by else "")
            + f") {code(r.get('id'))}"
        )
        lines_t.append(
            f"{status} VM {r.get('vmid')} -> {r.get('target')}: {r.get('reason') or ''} (asked by {asked_t}"
            + (f", approved by {who(by)[1]}" if by else "")
            + ")"
        )
    head = f"Overrides, newest first ({len(rows)})"
    return Answer(
        text=plain(head + ": " + "; ".join(lines_t)), blocks=[bk.section(f"*{head}*\n" + bk.bullets(lines_m))]
    )
