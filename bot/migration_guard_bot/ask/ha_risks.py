"""``HA risks``: a HaRisksBody (GET /v1/ha/risks) as one line per HA VM that HA may start on a node
that cannot run its CPU type, with each such node and why; and the lines the risk poster uses."""

from __future__ import annotations

from typing import Any

from migration_guard_bot import blocks as bk
from migration_guard_bot.answer_parts import Answer, _vm_label
from migration_guard_bot.messages import code, plain, prose


def risk_pairs(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``vmid:node`` -> the risk row with only that node: one entry per HA VM and risky node."""
    out: dict[str, dict[str, Any]] = {}
    for risk in body.get("risks") or []:
        if not isinstance(risk, dict) or risk.get("vmid") is None:
            continue
        for n in risk.get("nodes") or []:
            if isinstance(n, dict) and n.get("node"):
                out[f"{risk['vmid']}:{n['node']}"] = dict(risk, nodes=[n])
    return out


def risk_line(risk: dict[str, Any]) -> tuple[str, str]:
    """(mrkdwn, plain) of one HA VM and its risky nodes."""
    vm = _vm_label(risk)
    cpu = str(risk.get("cpu") or "kvm64")
    rule = risk.get("rule_or_group")
    where = f", HA {rule}" if rule else ", no HA rule: any node"
    nodes = [n for n in risk.get("nodes") or [] if isinstance(n, dict)]
    said = [
        (" (fallback)" if n.get("fallback") else "", str(n.get("message") or n.get("reason") or ""))
        for n in nodes
    ]
    parts_m = [f"{code(n.get('node'))}{fb}: {prose(msg)}" for n, (fb, msg) in zip(nodes, said, strict=True)]
    parts_t = [f"{n.get('node')}{fb}: {msg}" for n, (fb, msg) in zip(nodes, said, strict=True)]
    return (
        f"{vm['m']} ({code(cpu)}{prose(where)}) – " + "; ".join(parts_m),
        f"{vm['t']} ({cpu}{where}) - " + "; ".join(parts_t),
    )


def ha_risks_answer(body: dict[str, Any]) -> Answer:
    risks = [r for r in body.get("risks") or [] if isinstance(r, dict)]
    ha_vms = body.get("ha_vms")
    source = body.get("source")
    if source == "none" or ha_vms == 0:
        head = "No HA risks: no VM is HA-managed."
        return Answer(text=head, blocks=[bk.section(f":white_check_mark: {head}")])
    if not risks:
        head = f"No HA risks: each of the {ha_vms} HA VMs can start on every node HA may recover it on."
        blocks = [bk.section(f":white_check_mark: {prose(head)}")]
        text = head
    else:
        head = (
            f"{len(risks)} of {ha_vms} HA VMs may be recovered on a node that cannot run them "
            "(HA recovery and relocation run no hook: the VM would not start there)"
        )
        lines = [risk_line(r) for r in risks]
        blocks = [
            bk.section(f"*:warning: {prose(head)}*\n" + bk.bullets([m for m, _ in lines], 30)),
        ]
        text = head + ": " + "; ".join(t for _, t in lines) + "."
    ctx = f"HA placement from its {source}" if source in ("rules", "groups") else ""
    if body.get("checked_at"):
        ctx += (" · " if ctx else "") + f"checked {body['checked_at']}"
    if ctx:
        blocks.append(bk.context(prose(ctx)))
    return Answer(text=plain(text), blocks=blocks)
