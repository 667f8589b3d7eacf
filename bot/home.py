"""The App Home view: nodes (CPU model, vendor, best type), the recommended type, last vetoes."""

from __future__ import annotations

from typing import Any

from shared.errors import GuardError

from . import blocks as bk
from .answers import Service, _cpu_label, _first, _list_of, _node_name, _reasons, _vm_label, _when
from .messages import code, prose

LAST_VETOES = 5


def home_view(service: Service, command: str = "/canmove") -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [bk.header("migration-guard: live migrations and CPU types")]
    try:
        cluster = service.cluster()
        rec = service.recommendation(())
        decisions = service.decisions(20, None)
    except GuardError as exc:
        blocks.append(
            bk.section(":warning: The migration-guard service is not answering right now: " + prose(exc))
        )
        return {"type": "home", "blocks": blocks}
    nodes = _list_of(cluster, "nodes")
    lines = []
    for n in nodes:
        cpu = _first(n, "cpu_model", "model") or "CPU unknown"
        vendor = _first(n, "vendor", "cpu_vendor")
        best = _cpu_label(_first(n, "best_cpu_type", "best_type", "best", "cpu_type"))
        state = "" if n.get("online", True) else " (offline)"
        lines.append(
            f"{code(_node_name(n))}{state} – {prose(cpu)}"
            + (f", {prose(vendor)}" if vendor else "")
            + (f" – best type {code(best)}" if best else "")
        )
    blocks.append(bk.section("*Nodes*\n" + (bk.bullets(lines, 40) if lines else "No nodes known yet.")))
    r = rec.get("recommendation", rec) if isinstance(rec, dict) else {}
    cpu_type = _first(r, "cpu_type", "type", "model", "recommended", "best") if isinstance(r, dict) else r
    why = _first(r, "reason", "why", "message") if isinstance(r, dict) else None
    blocks.append(
        bk.section(
            "*Recommended CPU type*\n"
            + (code(cpu_type) if cpu_type else "–")
            + (f" – {prose(why)}" if why else "")
        )
    )
    vetoes = [d for d in _list_of(decisions, "decisions", "items", "results") if d.get("verdict") == "deny"]
    vlines = []
    for d in vetoes[:LAST_VETOES]:
        reasons = _reasons(d)
        why_d = str(reasons[0].get("message") or "") if reasons else ""
        vlines.append(
            f"{_when(d.get('time') or d.get('checked_at'))} {_vm_label(d)['m']} "
            f"{code(d.get('source') or '?')} → {code(d.get('target') or '?')}"
            + (f" – {prose(why_d)}" if why_d else "")
        )
    blocks.append(bk.section("*Last vetoes*\n" + (bk.bullets(vlines) if vlines else "None recently.")))
    blocks.append(
        bk.context(
            f"Ask: {code(command + ' 101 node3')} · {code(command + ' 101')} · "
            f"{code(command + ' recommend')} · or mention me"
        )
    )
    return {"type": "home", "blocks": blocks}
