"""``migration-guard coverage``: which VMs the guard does not protect (GET /v1/coverage).

Exit codes: 0 every VM guarded, 1 some VM unguarded or its hookscript file missing on a node,
3 service or cluster unreachable, 2 bad input.
"""

from __future__ import annotations

import argparse
import json

from migration_guard.cli.client import service_client, service_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "coverage",
        parents=[service_options(timeout=30.0)],
        help="VMs without the guard's hookscript, and hookscript files missing on nodes",
        description="List the VMs the guard does not protect: no migration-guard hookscript (templates "
        "and VMs tagged migration-guard-skip aside), or the hookscript file missing on a node where "
        "the VM could start. Exit 0 all guarded, 1 some not, 3 service unreachable.",
    )
    p.set_defaults(func=run_coverage)


def run_coverage(args: argparse.Namespace) -> int:
    with service_client(args) as client:
        body = client.coverage()
    print(json.dumps(body, indent=2) if args.json else format_coverage(body))
    return 1 if body.get("unguarded") or body.get("missing_volume") else 0


def format_coverage(body: dict) -> str:
    unguarded, missing = body.get("unguarded", []), body.get("missing_volume", [])
    lines = [
        f"cluster {body.get('cluster')}: {body.get('guarded', 0)} of {body.get('vms', 0)} VMs guarded, "
        f"{len(unguarded)} unguarded, {len(missing)} with the hookscript file missing on some node"
    ]
    for vm in unguarded:
        other = f" (has hookscript {vm['hookscript']})" if vm.get("hookscript") else ""
        lines.append(
            f"  unguarded  VM {vm['vmid']} {vm.get('name', '')} on {vm['node']}, {vm['status']}{other}"
        )
    for vm in missing:
        lines.append(
            f"  no file    VM {vm['vmid']} {vm.get('name', '')}: {vm['hookscript']} missing on "
            f"{', '.join(vm['missing_on'])} (it cannot start there: install the hook on those nodes)"
        )
    for vm in body.get("skipped", []):
        lines.append(f"  skipped    VM {vm['vmid']} {vm.get('name', '')}: {vm['why']}")
    for vm in body.get("unreadable", []):
        lines.append(f"  unknown    VM {vm['vmid']} on {vm['node']}: {vm['error']}")
    if body.get("volume_check", "done") != "done":
        lines.append(f"  hookscript files: {body['volume_check']}")
    if body.get("nodes_not_asked"):
        lines.append(f"  offline, not asked: {', '.join(body['nodes_not_asked'])}")
    return "\n".join(lines)
