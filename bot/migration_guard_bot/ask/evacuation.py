"""``can I put pve3 in maintenance?`` / ``what happens if pve3 goes down?``: an EvacuationBody
(GET /v1/nodes/{node}/evacuation) as a summary line, the stuck VMs first (why, and the fix), then
the VMs that can move and where."""

from __future__ import annotations

from typing import Any

from migration_guard_bot import blocks as bk
from migration_guard_bot.answer_parts import Answer, _vm_label
from migration_guard_bot.messages import code, plain, prose

#: at most this many VMs are listed in each part (Slack's section limit); the rest are counted
SHOWN = 25


def evacuation_answer(body: dict[str, Any], *, down: bool = False) -> Answer:
    node = str(body.get("node") or "?")
    summary = body.get("summary") or {}
    stuck: list[dict[str, Any]] = list(body.get("stuck") or [])
    vms: list[dict[str, Any]] = list(body.get("vms") or [])
    total = int(summary.get("vms", len(vms)))
    n_stuck = int(summary.get("stuck", len(stuck)))
    ha = int(summary.get("ha_managed", sum(1 for v in vms if v.get("ha"))))
    stuck_ids = {s.get("vmid") for s in stuck}
    if down:
        head = _down_head(node, vms, stuck, ha)
    elif not total:
        head = f"{node} maintenance: no VMs on it, nothing to move."
    elif n_stuck:
        head = (
            f"{node} maintenance: {total} VMs, {total - n_stuck} can move, {n_stuck} stuck ({ha} HA-managed)."
        )
    else:
        head = f"{node} maintenance: safe, all {total} VMs can move ({ha} HA-managed)."
    icon = ":no_entry:" if stuck and (not down or any(_ha(vms, s) for s in stuck)) else ":white_check_mark:"
    blocks = [bk.section(f"*{icon} {prose(head)}*")]
    lines_t = [head]
    shown_stuck = [s for s in stuck if not down or _ha(vms, s)]
    if shown_stuck:
        title = "Cannot start anywhere HA may put them" if down else "Stuck: no node can take them"
        m, t = zip(*(_stuck_line(s) for s in shown_stuck), strict=True)
        blocks.append(bk.section(f"*{title} ({len(shown_stuck)})*\n" + bk.bullets(list(m), SHOWN)))
        lines_t.append(f"{title}: " + "; ".join(t) + ".")
    movable = [v for v in vms if v.get("vmid") not in stuck_ids and (not down or v.get("ha"))]
    if movable:
        title = "HA restarts them on" if down else "Can move"
        m, t = zip(*(_movable_line(v) for v in movable), strict=True)
        blocks.append(bk.section(f"*{title} ({len(movable)})*\n" + bk.bullets(list(m), SHOWN)))
        lines_t.append(f"{title}: " + "; ".join(t) + ".")
    if down:
        stays = [v for v in vms if not v.get("ha")]
        if stays:
            labels = [_vm_label(v) for v in stays]
            blocks.append(
                bk.section(
                    f"*Not HA-managed: down until {code(node)} is back ({len(stays)})*\n"
                    + ", ".join(x["m"] for x in labels[:SHOWN])
                    + (f" … and {len(stays) - SHOWN} more" if len(stays) > SHOWN else "")
                )
            )
            lines_t.append(
                f"Not HA-managed, down until {node} is back: " + ", ".join(x["t"] for x in labels) + "."
            )
    blocks.append(bk.context(_context(body)))
    return Answer(text=plain(" ".join(lines_t)), blocks=blocks)


def _down_head(node: str, vms: list[dict[str, Any]], stuck: list[dict[str, Any]], ha: int) -> str:
    bad = sum(1 for s in stuck if _ha(vms, s))
    others = len(vms) - ha
    head = f"If {node} goes down: HA restarts its {_n(ha, 'HA-managed VM')} elsewhere"
    head += f", {bad} of them cannot start where HA may put them" if bad else ", all of them can start there"
    stay = "stays" if others == 1 else "stay"
    return head + (f"; {_n(others, 'other VM')} {stay} down until it is back." if others else ".")


def _n(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _ha(vms: list[dict[str, Any]], row: dict[str, Any]) -> bool:
    return any(v.get("vmid") == row.get("vmid") and v.get("ha") for v in vms)


def _stuck_line(s: dict[str, Any]) -> tuple[str, str]:
    vm = _vm_label(s)
    cpu = str(s.get("cpu") or "kvm64")
    why = str(s.get("why") or "no node can run it")
    fix = s.get("fix")
    fix_nodes = [str(n) for n in s.get("fix_nodes") or []]
    fix_why = str(s.get("fix_why") or "")
    if fix_why:  # the service's sentence: which type, where it runs, what to do
        fix_m, fix_t = f"fix: {prose(fix_why)}", f"fix: {fix_why}"
    elif fix:
        where = f" (runs here and on {', '.join(fix_nodes)})" if fix_nodes else ""
        fix_m, fix_t = f"fix: set CPU type {code(fix)}{prose(where)}", f"fix: set CPU type {fix}{where}"
    else:
        fix_m = fix_t = "no CPU type runs here and on another node"
    status = str(s.get("status") or "")
    st = f", {status}" if status and status != "running" else ""
    return (
        f"{vm['m']} ({code(cpu)}{prose(st)}): {prose(why)} – {fix_m}",
        f"{vm['t']} ({cpu}{st}): {why} - {fix_t}",
    )


def _movable_line(v: dict[str, Any]) -> tuple[str, str]:
    vm = _vm_label(v)
    cpu = str(v.get("cpu") or "kvm64")
    allowed = [str(n) for n in v.get("allowed_targets") or []]
    ha = v.get("ha") if isinstance(v.get("ha"), dict) else None
    rule = f", HA {ha.get('group_or_rule')}" if ha and ha.get("group_or_rule") else ""
    m = f"{vm['m']} ({code(cpu)}{prose(rule)}) → " + (", ".join(code(n) for n in allowed) or "–")
    t = f"{vm['t']} ({cpu}{rule}) -> " + (", ".join(allowed) or "-")
    return m, t


def _context(body: dict[str, Any]) -> str:
    source = body.get("ha_source")
    parts = []
    if source == "unknown":
        parts.append(
            "HA placement could not be read" + (f" ({body.get('ha_error')})" if body.get("ha_error") else "")
        )
    elif source in ("rules", "groups"):
        parts.append(f"HA placement from its {source}")
    if body.get("checked_at"):
        parts.append(f"checked {body['checked_at']}")
    return prose(" · ".join(parts)) or " "
