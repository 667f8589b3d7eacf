"""The answer to a what-if question (``what if we add an EPYC 9654 node?``, ``what if we retire
pve-atom1?``): the service's recommendation with its ``what_if`` block, as a Slack message."""

from __future__ import annotations

from typing import Any

from migration_guard.errors import UnknownNodeError
from migration_guard_bot import blocks as bk
from migration_guard_bot.answer_parts import Answer
from migration_guard_bot.ask.resolve import node_named
from migration_guard_bot.messages import code, plain, prose
from migration_guard_bot.parser import WhatIf


def ask_what_if(intent: WhatIf, service: Any) -> Answer:
    """Ask the service; a removed node named in another case is asked again in its spelling."""
    try:
        body = service.recommendation(add=intent.add, remove=intent.remove)
    except UnknownNodeError:
        spelled = [node_named(n, service) or n for n in intent.remove]
        if spelled == list(intent.remove):
            raise
        body = service.recommendation(add=intent.add, remove=spelled)
    return what_if_answer(body["what_if"])


def _lacks(entry: dict[str, Any]) -> str:
    if entry.get("reason"):
        return f"{code(entry['node'])} (other vendor)"
    missing = [str(m) for m in entry.get("missing") or []]
    shown = ", ".join(missing[:4]) + (f" +{len(missing) - 4} more" if len(missing) > 4 else "")
    return f"{code(entry['node'])} (lacks {prose(shown)})" if missing else code(entry["node"])


def _vm(row: dict[str, Any]) -> str:
    name = f" {code(row['name'])}" if row.get("name") else ""
    return f"VM {row['vmid']}{name} ({code(row.get('cpu') or 'kvm64')}) on {code(row.get('node') or '?')}"


def _section(title: str, lines: list[str]) -> dict[str, Any]:
    return bk.section(f"*{title} ({len(lines)})*\n" + bk.bullets(lines, limit=12))


def what_if_answer(block: dict[str, Any]) -> Answer:
    before, after = block.get("recommended_before"), block.get("recommended_after")
    if before == after:
        rec = f"The recommended CPU type stays {code(after or 'none')}"
    else:
        rec = f"The recommended CPU type changes from {code(before or 'none')} to {code(after or 'none')}"
    change = ", ".join(
        [f"add {code(a['node'])} ({prose(a.get('cpu_model') or '?')})" for a in block.get("added") or []]
        + [f"retire {code(r)}" for r in block.get("removed") or []]
    )
    blocks = [bk.section(f"*:bulb: What if we {change}?*\n{rec}")]
    model = block.get("custom_model")
    if isinstance(model, dict) and model.get("reported_model"):
        gains = model.get("gains_over") or {}
        blocks.append(
            bk.context(
                f"Best custom model after it: {code(model['reported_model'])} + "
                f"{len(model.get('flags') or [])} flags ({code(gains.get('level') or '?')} + "
                f"{len(gains.get('features') or [])} features)"
            )
        )
    breaks = [
        f"{_vm(r)} cannot run on " + ", ".join(_lacks(c) for c in r["cannot_run_on"])
        for r in block.get("would_break") or []
    ]
    gains_l = [_vm(r) + " would run on every node" for r in block.get("would_gain") or []]
    moves = [
        f"{_vm(r)} → "
        + (
            ", ".join(code(n) for n in r.get("can_move_to") or [])
            or "*nowhere*: no other node runs its CPU type"
        )
        for r in block.get("must_move") or []
    ]
    limited = [
        f"{_vm(r)} cannot run on " + ", ".join(_lacks(c) for c in r["cannot_run_on"])
        for r in block.get("blocked_on_added") or []
    ]
    for title, lines in (
        (":no_entry: Would no longer run on every node", breaks),
        (":warning: Must move off the retired nodes first", moves),
        (":white_check_mark: Would run on every node", gains_l),
        (":grey_question: Already limited, and the new node cannot run them either", limited),
    ):
        if lines:
            blocks.append(_section(title, lines))
    if not (breaks or moves or gains_l or limited):
        blocks.append(bk.context("No VM's CPU type is affected."))
    return Answer(text=plain(str(block.get("summary") or "what if")), blocks=blocks)
