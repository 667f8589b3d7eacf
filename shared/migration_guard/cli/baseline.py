"""``migration-guard cpu baseline``: the richest custom CPU model every node runs, from local host
files (the engine, no service) or from the live cluster through the service (``--cluster``);
``--apply`` creates it in Proxmox through the service, else the cpu-models.conf text is printed.

Exit codes: 0 ok, 2 bad input, 3 service or cluster unreachable.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from migration_guard.cli.client import service_client, service_options
from migration_guard.engine import baseline
from migration_guard.engine.hosts import load_host_file
from migration_guard.errors import HostDataError, InputError
from migration_guard.service.custom_model import plan_body

CONF = "/etc/pve/virtual-guest/cpu-models.conf"


def register(sub: Any, host_help: str) -> None:
    cmd = sub.add_parser(
        "baseline",
        parents=[service_options(timeout=30.0)],  # --url --token --json --timeout
        help="the richest custom CPU model every node runs (cpu-models.conf text, or --apply)",
        description="The richest custom CPU model every node runs: a reported-model plus the flags "
        "every node's KVM offers beyond it (never one QEMU marks unmigratable), phys-bits of the "
        "narrowest node. Nodes from host files (--host, no service) or the live cluster (--cluster, "
        "through the service). Exit 0 ok, 2 bad input, 3 service unreachable.",
    )
    cmd.add_argument("--host", action="append", metavar="FILE", help=host_help + " (repeatable)")
    cmd.add_argument("--cluster", action="store_true", help="the live cluster's nodes, through the service")
    cmd.add_argument(
        "--nodes", metavar="A,B", help="with --cluster: only these nodes (default: every online one)"
    )
    cmd.add_argument("--name", default=baseline.DEFAULT_NAME, help="the model's name (cpu: custom-NAME)")
    cmd.add_argument(
        "--apply",
        action="store_true",
        help="with --cluster: create it in Proxmox "
        "(the service's token needs Mapping.Modify on /mapping/cpu)",
    )
    cmd.set_defaults(func=run)


def _local(args: argparse.Namespace) -> dict:
    paths = args.host or []
    if sum(1 for p in paths if p == "-") > 1:
        raise HostDataError("stdin (-) can be given as a host only once")
    hosts = [load_host_file(p) for p in paths]
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise InputError(f"two host files name the same node ({', '.join(names)}): give each its own name")
    return plan_body(baseline.plan(hosts, name=args.name), [])


def run(args: argparse.Namespace) -> int:
    if bool(args.host) == bool(args.cluster):
        raise InputError("give the nodes either as --host FILE (repeatable) or with --cluster")
    if args.apply and not args.cluster:
        raise InputError("--apply creates the model in the live cluster: use it with --cluster")
    if args.host:
        body = _local(args)
    else:
        nodes = [n.strip() for n in args.nodes.split(",") if n.strip()] if args.nodes else None
        with service_client(args) as client:
            if args.apply:
                body = client.create_custom_model(nodes, args.name)
            else:
                body = client.custom_model(nodes, args.name)
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        print(format_body(body, applied=bool(body.get("created"))))
    return 0


def format_body(body: dict, *, applied: bool = False) -> str:
    """The model for an operator: what it is, what it gains, what was left out and why, the text."""
    flags = body["flags"]
    head = [f"Custom CPU model custom-{body['name']} for {', '.join(body['nodes'])}:"]
    width = f"phys-bits {body['phys_bits']}" if body.get("phys_bits") else "no phys-bits"
    head.append(f"  reported-model {body['reported_model']} + {len(flags)} flags; {width}")
    gains = body.get("gains_over") or {}
    if gains.get("level"):
        more = " ".join(gains["features"]) or "nothing"
        head.append(f"  over {gains['level']}: + {more}")
    why: dict[str, list[str]] = {}
    for item in body.get("left_out") or ():
        why.setdefault(item["why"], []).append(item["flag"])
    for reason, names in why.items():
        head.append(f"  left out {' '.join(names)}: {reason}")
    for note in body.get("notes") or ():
        head.append(f"  note: {note}")
    for vm in body.get("vms_that_gain") or ():
        names = vm["gains"]
        shown = " ".join(names[:6]) + (f" +{len(names) - 6} more" if len(names) > 6 else "")
        head.append(f"  VM {vm['vmid']} {vm['name']} ({vm['cpu']}) would gain {len(names)} features: {shown}")
    if applied:
        head.append(f"Created in Proxmox: give a VM 'cpu: custom-{body['name']}' to use it.")
        return "\n".join(head)
    head.append(f"Add to {CONF} (or run with --cluster --apply):")
    return "\n".join(head) + "\n\n" + body["section"].rstrip("\n")
