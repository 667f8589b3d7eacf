"""``migration-guard evacuate NODE`` (can the node go into maintenance: the stuck VMs first, with why
and fix) and ``migration-guard ha risks`` (HA VMs that HA may start where they cannot run): operator
clients of the service's API (MIGRATION_GUARD_URL, MIGRATION_GUARD_TOKEN).

Exit codes: 0 every VM can move / no HA risk, 1 some VM is stuck / some HA VM is at risk, 2 bad
input (a node the cluster does not have), 3 some verdict unknown, or the service, Proxmox or HA's
configuration unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from migration_guard.cli.client import service_client, service_options
from migration_guard.client import ServiceClient
from migration_guard.errors import InputError, NotFoundError, ServiceError


def register(sub: argparse._SubParsersAction) -> None:
    common = service_options(timeout=60.0)

    evacuate = sub.add_parser(
        "evacuate",
        parents=[common],
        help="can NODE go into maintenance: the VMs with nowhere to go, why, and the fix",
        description="Every VM on NODE (running and stopped) against every node it could move to "
        "(HA-managed VMs: the nodes HA's rule or group allows). Exit 0 every VM can move, 1 some "
        "VM is stuck, 3 some verdict unknown or the service unreachable, 2 bad input.",
    )
    evacuate.add_argument("node", help="the node to empty, e.g. pve3")
    evacuate.set_defaults(func=run_evacuate)

    ha = sub.add_parser("ha", help="Proxmox HA: recovery risks")
    ha_sub = ha.add_subparsers(dest="ha_command", metavar="COMMAND")
    risks = ha_sub.add_parser(
        "risks",
        parents=[common],
        help="HA VMs that HA may start on a node that cannot run their CPU type",
        description="For each HA VM, the nodes HA may start it on after a node failure (or move it "
        "to) that cannot run its CPU type. Exit 0 none, 1 some, 3 HA's configuration, Proxmox or "
        "the service unreachable.",
    )
    risks.set_defaults(func=run_ha_risks)
    ha.set_defaults(func=lambda args: _usage(ha))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _ask(args: argparse.Namespace, fetch: Callable[[ServiceClient], dict], what: str) -> dict | None:
    """The answer, or None after a one-line message (Proxmox or HA's configuration not readable)."""
    try:
        with service_client(args) as client:
            return fetch(client)
    except NotFoundError as exc:
        raise InputError(f"{what}: {exc}") from None
    except InputError:
        raise
    except ServiceError as exc:
        print(f"migration-guard: {exc}", file=sys.stderr)
        return None


def run_evacuate(args: argparse.Namespace) -> int:
    body = _ask(args, lambda client: client.evacuation(args.node), f"node {args.node}")
    if body is None:
        return 3
    print(json.dumps(body, indent=2) if args.json else format_evacuation(body))
    summary = body["summary"]
    return 1 if summary["stuck"] else 3 if summary["unknown"] else 0


def format_evacuation(body: dict) -> str:
    s = body["summary"]
    ha = {"rules": "from HA rules", "groups": "from HA groups", "none": "no HA", "unknown": "HA unreadable"}
    lines = [
        f"{body['node']}: {s['vms']} VMs: {s['movable']} can move, {s['stuck']} stuck, "
        f"{s['unknown']} unknown ({s['ha_managed']} HA-managed, {ha.get(body['ha_source'], '?')})"
    ]
    if body.get("ha_error"):
        lines.append(f"  HA: {body['ha_error']}")
    for vm in body["stuck"]:
        lines.append(f"STUCK    {_vm(vm)}")
        lines.append(f"  why: {vm['why']}")
        lines.append(f"  fix: {vm['fix_why']}" if vm["fix"] else f"  no fix: {vm['fix_why']}")
    stuck = {vm["vmid"] for vm in body["stuck"]}
    for vm in body["vms"]:
        if vm["vmid"] in stuck:
            continue
        rule = f"  HA {vm['ha']['group_or_rule'] or '(no rule)'}" if vm["ha"] else ""
        if vm["allowed_targets"]:
            lines.append(f"MOVABLE  {_vm(vm)}{rule} -> {', '.join(vm['allowed_targets'])}")
        else:
            lines.append(f"UNKNOWN  {_vm(vm)}{rule}")
            lines += [f"  {t['node']}: {t['message']}" for t in vm["targets"] if t["verdict"] == "unknown"]
    if s["stuck"]:
        lines.append(f"not ready for maintenance: {s['stuck']} VM(s) would be stuck on {body['node']}")
    elif s["unknown"]:
        lines.append(f"cannot say: {s['unknown']} VM(s) could not be judged")
    else:
        lines.append(f"ready for maintenance: every VM on {body['node']} can move")
    return "\n".join(lines)


def _vm(vm: dict) -> str:
    name = f" ({vm['name']})" if vm.get("name") else ""
    return f"VM {vm['vmid']}{name}  cpu {vm.get('cpu') or '?'}  {vm.get('status', '')}".rstrip()


def run_ha_risks(args: argparse.Namespace) -> int:
    body = _ask(args, lambda client: client.ha_risks(), "HA risks")
    if body is None:
        return 3
    print(json.dumps(body, indent=2) if args.json else format_ha_risks(body))
    return 1 if body["risks"] else 0


def format_ha_risks(body: dict) -> str:
    source = {"rules": "HA rules", "groups": "HA groups", "none": "no HA resources"}
    lines = [
        f"{body['cluster']}: {body['ha_vms']} HA VMs ({source.get(body['source'], body['source'])}), "
        f"{len(body['risks'])} at risk"
    ]
    for risk in body["risks"]:
        name = f" ({risk['name']})" if risk.get("name") else ""
        rule = risk["rule_or_group"] or "no rule"
        strict = ", strict" if risk.get("strict") else ""
        lines.append(
            f"RISK  VM {risk['vmid']}{name} on {risk['node']}  cpu {risk.get('cpu') or '?'}  {rule}{strict}"
        )
        for node in risk["nodes"]:
            lines.append(f"  {node['node']}: {node['verdict'].upper()} [{node['reason']}] {node['message']}")
    if not body["risks"]:
        lines.append("no HA VM would be started on a node that cannot run it")
    return "\n".join(lines)
