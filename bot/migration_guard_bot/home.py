"""The App Home view: nodes (CPU model, vendor, best type), the recommended type, last vetoes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from migration_guard.errors import GuardError
from migration_guard_bot import blocks as bk
from migration_guard_bot.answers import (
    Service,
    _cpu_label,
    _reasons,
    _vm_label,
    _when,
)
from migration_guard_bot.coverage_watch import home_line
from migration_guard_bot.messages import code, prose

LAST_VETOES = 5


def home_view(service: Service, command: str = "/canmove") -> dict[str, Any]:
    """Each section is read on its own: one failing call leaves a one-line note, not an empty tab."""
    blocks: list[dict[str, Any]] = [bk.header("migration-guard: live migrations and CPU types")]
    blocks.append(bk.section("*Nodes*\n" + _section(lambda: _nodes_and_versions(service.cluster()))))
    blocks.append(
        bk.section("*Recommended CPU type*\n" + _section(lambda: _recommended(service.recommendation(()))))
    )
    blocks.append(bk.section("*Last vetoes*\n" + _section(lambda: _vetoes(service.decisions(20, None)))))
    coverage = getattr(service, "coverage", None)  # GET /v1/coverage: VMs without the guard
    if coverage is not None:
        blocks.append(bk.section("*Coverage*\n" + _section(lambda: home_line(coverage()))))
    blocks.append(
        bk.context(
            f"Ask: {code(command + ' 101 node3')} · {code(command + ' 101')} · "
            f"{code(command + ' recommend')} · or mention me"
        )
    )
    return {"type": "home", "blocks": blocks}


def _section(build: Callable[[], str]) -> str:
    try:
        return build()
    except GuardError as exc:
        return ":warning: " + prose(f"not available right now: {exc}")
    except (KeyError, TypeError, ValueError, AttributeError):
        return ":warning: the service answered something the bot cannot read"


def _nodes(cluster: dict[str, Any]) -> str:
    """The ``nodes`` of a ClusterView, one line each."""
    lines = []
    for n in cluster["nodes"]:
        if n.get("error"):
            lines.append(f"{code(n['name'])} – {prose(n['error'])}")
            continue
        cpu = n.get("cpu_model") or "CPU unknown"
        vendor = n.get("vendor")
        best = _cpu_label(n.get("best_cpu_type"))
        state = "" if n.get("online", True) else " (offline)"
        lines.append(
            f"{code(n['name'])}{state} – {prose(cpu)}"
            + (f", {prose(vendor)}" if vendor else "")
            + (f" – best type {code(best)}" if best else "")
            + _versions(n)
            + (f" ({prose(str(n['best_cpu_note']))})" if n.get("best_cpu_note") else "")
        )
    return bk.bullets(lines, 40) if lines else "No nodes known yet."


def _nodes_and_versions(cluster: dict[str, Any]) -> str:
    """The node lines, each with its Proxmox and QEMU version, and a rolling upgrade flagged."""
    text = _nodes(cluster)
    upgrade = cluster.get("rolling_upgrade")
    if isinstance(upgrade, dict) and upgrade.get("message"):
        text = ":arrows_counterclockwise: " + prose(str(upgrade["message"])) + "\n" + text
    return text


def _versions(n: dict[str, Any]) -> str:
    pve, qemu = n.get("pve_version"), n.get("qemu_version")
    parts = ([f"PVE {pve}"] if pve else []) + ([f"QEMU {qemu}"] if qemu else [])
    return f" – {prose(', '.join(parts))}" if parts else ""


def _recommended(rec: dict[str, Any]) -> str:
    """A RecommendationBody: ``recommended`` (null: no type runs on every node), ``reason``,
    ``vms_at_risk``."""
    cpu_type = rec["recommended"]
    why = rec.get("reason")
    at_risk = rec.get("vms_at_risk") or []
    text = code(cpu_type) if cpu_type else "no CPU type runs on every node"
    if why:
        text += f" – {prose(why)}"
    if at_risk:
        text += f"\n{len(at_risk)} VM(s) use a type some node cannot run: " + ", ".join(
            _vm_label(v)["m"] for v in at_risk[:10]
        )
    return text


def _vetoes(decisions: list[dict[str, Any]]) -> str:
    """The vetoes among the decision records, newest first."""
    vetoes = [d for d in decisions if d.get("verdict") == "deny"]
    lines = []
    for d in vetoes[:LAST_VETOES]:
        reasons = _reasons(d)
        why = str(reasons[0].get("message") or "") if reasons else ""
        lines.append(
            f"{_when(d.get('time') or d.get('checked_at'))} {_vm_label(d)['m']} "
            f"{code(d.get('source') or '?')} → {code(d.get('target') or '?')}"
            + (f" – {prose(why)}" if why else "")
        )
    return bk.bullets(lines) if lines else "None recently."
