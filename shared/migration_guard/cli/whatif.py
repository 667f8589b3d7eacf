"""``migration-guard recommend`` (the cluster's CPU type, and what if a node were added or
removed), ``migration-guard drift`` (the latest changes of the nodes' CPU facts): clients of the
service's API; and ``migration-guard cpu list`` (the shipped real CPUs a what-if may add; local
data, no service).

Exit codes: 0 ok, 1 the change would break something (a VM's CPU type no longer runs on every
node, or a VM on a removed node has nowhere to go), 2 bad input, 3 service unreachable.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from migration_guard.cli.client import service_client, service_options
from migration_guard.engine.cpus import shipped_cpus
from migration_guard.engine.hosts import HostCpu, load_host_file


def register(sub: argparse._SubParsersAction) -> None:
    common = service_options(timeout=30.0)

    rec = sub.add_parser(
        "recommend",
        parents=[common],
        help="the cluster's CPU type; what if a node were added (--add, --host) or removed (--remove)",
        description="The CPU type every node runs, and with --add/--host/--remove what the cluster "
        "would look like after that change: the new recommended type, the custom model, the VMs that "
        "would break, gain or have to move. Exit 0 ok, 1 the change breaks something, 2 bad input, "
        "3 service unreachable.",
    )
    rec.add_argument("--nodes", help="comma-separated nodes to recommend for (default: every online node)")
    rec.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="CPU",
        help="add a node with this shipped CPU, e.g. 'EPYC 9654' (migration-guard cpu list; repeatable)",
    )
    rec.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="FILE",
        help="add a node with this CPU: a /proc/cpuinfo copy or a JSON host file (repeatable)",
    )
    rec.add_argument(
        "--remove", action="append", default=[], metavar="NODE", help="remove this node (repeatable)"
    )
    rec.set_defaults(func=run_recommend)

    drift = sub.add_parser(
        "drift",
        parents=[common],
        help="the latest changes of the nodes' CPU facts (BIOS, microcode, kernel, QEMU updates)",
        description="The latest drift events: a node's CPU flags, CPU model, QEMU or Proxmox version "
        "changed between two inventory refreshes, and which VMs that blocked or freed.",
    )
    drift.add_argument("--node", help="only this node's changes")
    drift.add_argument("--limit", type=int, default=20, help="how many, newest first (default 20)")
    drift.set_defaults(func=run_drift)


def register_cpu_list(cpu_sub: argparse._SubParsersAction) -> None:
    """``migration-guard cpu list``, in the ``cpu`` group (cli/cpu.py)."""
    listing = cpu_sub.add_parser(
        "list",
        help="the real CPUs a what-if may add (recommend --add CPU), with their best x86-64-vN level",
        description="The real CPUs the project ships (a public /proc/cpuinfo dump each), by the name "
        "recommend --add takes, with vendor, family/model, the best x86-64-vN level and the source.",
    )
    listing.add_argument("--json", action="store_true", help="print JSON (as GET /v1/cpus answers)")
    listing.set_defaults(func=run_cpu_list)


def run_cpu_list(args: argparse.Namespace) -> int:
    cpus = [c.as_dict() for c in shipped_cpus()]
    if args.json:
        print(json.dumps({"cpus": cpus}, indent=2))
        return 0
    rows = [["NAME", "VENDOR", "FAMILY/MODEL", "BEST LEVEL", "MODEL NAME"]]
    for c in cpus:
        rows.append([c["name"], c["vendor"], f"{c['family']}/{c['model']}", c["level"], c["model_name"]])
    print(_table(rows))
    return 0


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def host_data(host: HostCpu) -> dict[str, Any]:
    """A host file's CPU as the API's HostIn."""
    out: dict[str, Any] = {
        "name": host.name,
        "vendor": host.vendor,
        "model": host.model,
        "flags": sorted(host.flags),
        "flag_source": host.flag_source,
    }
    for key, value in (
        ("bugs", sorted(host.bugs) if host.bugs is not None else None),
        ("family", host.family),
        ("model_number", host.model_number),
        ("phys_bits", host.phys_bits),
    ):
        if value is not None:
            out[key] = value
    return out


def run_recommend(args: argparse.Namespace) -> int:
    hosts = [host_data(load_host_file(path)) for path in args.host]
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()] if args.nodes else None
    with service_client(args) as client:
        body = client.recommendation(nodes, add=args.add, remove=args.remove, hosts=hosts)
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        print(format_recommendation(body))
    block = body.get("what_if") or {}
    stranded = [m for m in block.get("must_move", []) if not m.get("can_move_to")]
    return 1 if block.get("would_break") or stranded else 0


def _lacks(entry: dict) -> str:
    if entry.get("reason"):
        return f"{entry['node']} ({entry['reason']})"
    missing = entry.get("missing") or []
    shown = ", ".join(missing[:6]) + (f" +{len(missing) - 6} more" if len(missing) > 6 else "")
    return f"{entry['node']} (lacks {shown})" if missing else entry["node"]


def _vm(row: dict) -> str:
    return f"VM {row['vmid']} {row.get('name') or ''} ({row.get('cpu')}) on {row.get('node')}".replace(
        "  ", " "
    )


def format_recommendation(body: dict) -> str:
    lines = [f"cluster {body.get('cluster')}: recommended CPU type {body.get('recommended') or 'none'}"]
    lines.append(f"  nodes: {', '.join(body.get('nodes') or [])}")
    if body.get("reason"):
        lines.append(f"  {body['reason']}")
    block = body.get("what_if")
    at_risk = body.get("vms_at_risk") or []
    if block and at_risk:  # the question is the change: today's list is one command away
        lines.append(f"  {len(at_risk)} VMs at risk today (migration-guard recommend lists them)")
    for vm in [] if block else at_risk:
        where = "; ".join(_lacks(c) for c in vm.get("cannot_run_on") or [])
        lines.append(f"  at risk: {_vm(vm)} cannot run on {where}")
    if not block:
        return "\n".join(lines)
    lines += ["", f"what if: {block['summary']}"]
    before, after = block.get("recommended_before"), block.get("recommended_after")
    change = "unchanged" if before == after else f"was {before}"
    lines.append(f"  recommended after: {after or 'none'} ({change})")
    model = block.get("custom_model")
    if model:
        gains = model.get("gains_over") or {}
        lines.append(
            f"  custom model after: {model['reported_model']} + {len(model.get('flags') or [])} flags "
            f"({gains.get('level')} + {len(gains.get('features') or [])} features); section:"
        )
        lines += ["    " + line for line in str(model.get("section", "")).rstrip("\n").splitlines()]
    for key, title in (
        ("would_break", "would no longer run on every node"),
        ("blocked_on_added", "already limited, cannot run on the new node either"),
    ):
        for row in block.get(key) or []:
            where = "; ".join(_lacks(c) for c in row.get("cannot_run_on") or [])
            lines.append(f"  {title}: {_vm(row)}: {where}")
    for row in block.get("would_gain") or []:
        lines.append(f"  would run on every node: {_vm(row)}")
    for row in block.get("must_move") or []:
        to = ", ".join(row.get("can_move_to") or []) or "NOWHERE (its CPU type runs on no other node)"
        lines.append(f"  must move first: {_vm(row)} -> {to}")
    return "\n".join(lines)


def run_drift(args: argparse.Namespace) -> int:
    with service_client(args) as client:
        body = client.drift(args.limit, args.node)
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    events = body.get("events") or []
    if not events:
        print(f"cluster {body.get('cluster')}: no drift recorded (every node's CPU facts are as first seen)")
        return 0
    for ev in events:
        parts = []
        if ev.get("vanished"):
            parts.append("vanished " + " ".join(ev["vanished"]))
        if ev.get("appeared"):
            parts.append("appeared " + " ".join(ev["appeared"]))
        for key, (old, new) in (ev.get("changed") or {}).items():
            parts.append(f"{key} {old} -> {new}")
        print(f"{ev['time']}  {ev['node']}: {'; '.join(parts) or 'changed'}")
        for vm in ev.get("vms_now_blocked") or []:
            arrow = (
                f"{ev['node']} -> {vm['node']}"
                if vm["direction"] == "from"
                else f"{vm['node']} -> {ev['node']}"
            )
            print(f"  now blocked: VM {vm['vmid']} {vm['name']} ({vm['cpu']}) {arrow}")
        for vm in ev.get("vms_now_movable") or []:
            arrow = (
                f"{ev['node']} -> {vm['node']}"
                if vm["direction"] == "from"
                else f"{vm['node']} -> {ev['node']}"
            )
            print(f"  now movable: VM {vm['vmid']} {vm['name']} ({vm['cpu']}) {arrow}")
    return 0
