"""``migration-guard check VMID TARGET`` and ``migration-guard matrix``: operator clients of the
service's API (settings MIGRATION_GUARD_URL, MIGRATION_GUARD_TOKEN).

Exit codes: 0 allow, 1 deny, 3 unknown or service/cluster unreachable, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

from migration_guard.cli.settings import cli_settings
from migration_guard.client import VMID, ServiceClient
from migration_guard.errors import GuardError, InputError, NotFoundError

EXIT = {"allow": 0, "deny": 1, "unknown": 3}


def register(sub: argparse._SubParsersAction) -> None:
    common = service_options(timeout=15.0)

    check = sub.add_parser(
        "check",
        parents=[common],
        help="ask the service whether VM VMID may live-migrate to node TARGET",
        description="Ask the compatibility service whether a VM may live-migrate to a node. "
        "Exit 0 allow, 1 deny, 3 unknown or unreachable, 2 bad input.",
    )
    check.add_argument("vmid", help="the VM id, e.g. 101")
    check.add_argument(
        "target",
        help="the target node, e.g. pve3, or CLUSTER/NODE for a node of another cluster the service reads",
    )
    check.set_defaults(func=run_check)

    matrix = sub.add_parser(
        "matrix",
        parents=[common],
        help="every VM against every node",
        description="Every VM of the cluster against every other node. Exit 0 when every move is "
        "allowed, 1 when some are denied, 3 when the service is unreachable.",
    )
    matrix.set_defaults(func=run_matrix)


def service_options(timeout: float) -> argparse.ArgumentParser:
    """The options of every command that asks the service (a parent parser): --url, --token,
    --json, --timeout (``timeout``: this command's default seconds)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the service (default MIGRATION_GUARD_URL, else http://127.0.0.1:8080)")
    common.add_argument("--token", help="bearer token (default MIGRATION_GUARD_TOKEN)")
    common.add_argument("--json", action="store_true", help="print the API's JSON answer")
    common.add_argument("--timeout", type=float, default=timeout, help="seconds to wait for the service")
    return common


def service_client(args: argparse.Namespace) -> ServiceClient:
    """The API client for a command's --url/--token/--timeout, else the settings'."""
    settings = cli_settings()
    token = args.token if args.token is not None else settings.token.get_secret_value()
    return ServiceClient(args.url or settings.url, token, timeout=args.timeout)


def vmid_arg(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise InputError(f"VMID must be a number like 101, not {text!r}")
    # Proxmox's pve-vmid format (pve-common PVE/JSONSchema.pm): 100 to 999999999, no leading zero
    if not VMID.match(text):
        raise InputError(
            f"VMID {text[:30]} is not a Proxmox VM id (100 to 999999999, no leading zero), e.g. 101"
        )
    return int(text)


def run_check(args: argparse.Namespace) -> int:
    vmid = vmid_arg(args.vmid)
    try:
        with service_client(args) as client:
            cluster, _, node = args.target.rpartition("/")
            body = client.check(vmid, node, cluster or None)
    except NotFoundError as exc:
        print(f"migration-guard: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(body, indent=2))
        return EXIT.get(body.get("verdict", ""), 3)
    print(format_verdict(body))
    return EXIT.get(body.get("verdict", ""), 3)


def format_verdict(body: dict) -> str:
    name = f" ({body['name']})" if body.get("name") else ""
    head = {"allow": "ALLOW", "deny": "DENY", "unknown": "UNKNOWN"}.get(body.get("verdict", ""), "?")
    lines = [
        f"{head}  VM {body['vmid']}{name}  {_where(body, 'source')} -> {_where(body, 'target')}  "
        f"cpu {body.get('cpu') or '?'}"
    ]
    for reason in body.get("reasons", []):
        lines.append(f"  - [{reason['code']}] {reason['message']}")
    if body.get("suggestion"):
        lines.append(f"  suggestion: {body['suggestion']}")
    age = body.get("facts_age_s")
    source = body.get("flag_source")
    tail = []
    if source:
        tail.append(f"flags from {source}")
    if age is not None:
        tail.append(f"facts {age:g} s old" + (" (stale)" if body.get("stale") else ""))
    if tail:
        lines.append("  " + ", ".join(tail))
    return "\n".join(lines)


def _where(body: dict, side: str) -> str:
    """A node, as CLUSTER/NODE when the verdict crosses clusters."""
    node = body.get(side) or "?"
    if body.get("source_cluster") != body.get("target_cluster") and body.get(f"{side}_cluster"):
        return f"{body[f'{side}_cluster']}/{node}"
    return node


def run_matrix(args: argparse.Namespace) -> int:
    with service_client(args) as client:
        body = client.matrix()
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        print(format_matrix(body))
    verdicts = {cell["verdict"] for row in body.get("vms", []) for cell in row.get("targets", {}).values()}
    if "deny" in verdicts:
        return 1
    if "unknown" in verdicts:
        return 3
    return 0


def format_matrix(body: dict) -> str:
    nodes = body.get("nodes", [])
    rows = body.get("vms", [])
    mark = {"allow": "ok", "deny": "NO", "unknown": "?"}
    header = ["VMID", "NAME", "ON", "CPU"] + nodes
    table = [header]
    for row in rows:
        cells = []
        for node in nodes:
            cell = row.get("targets", {}).get(node)
            if cell is None:
                cells.append("-")
            else:
                cells.append(
                    mark.get(cell["verdict"], "?") + (f" {cell['code']}" if cell.get("code") else "")
                )
        table.append([str(row["vmid"]), row.get("name", ""), row.get("node", ""), row.get("cpu", "")] + cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    out.append("")
    out.append("ok = may migrate, NO = denied (code), ? = unknown, - = the node the VM is on")
    if body.get("note"):
        out.append(body["note"])
    return "\n".join(out)


__all__ = ["register", "run_check", "run_matrix", "format_verdict", "format_matrix", "GuardError"]
