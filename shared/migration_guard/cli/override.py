"""``migration-guard override request|approve|reject|list``: audited one-time overrides. One
operator asks that one denied migration pass (a reason, a lifetime); a second person approves; the
next denied decision of that VM and target within the lifetime is allowed, then the override is
spent. Who asks or approves: ``--as NAME``, else $SUDO_USER, else $USER.

Exit codes: 0 done, 1 refused (approving one's own override, or one expired, spent or rejected),
2 bad input (unknown VM, node or override), 3 the service unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys

from migration_guard.cli.client import service_client, service_options, vmid_arg
from migration_guard.cli.settings import cli_settings
from migration_guard.errors import ConflictError, InputError, NotFoundError


def register(sub: argparse._SubParsersAction) -> None:
    common = service_options(timeout=15.0)
    person = argparse.ArgumentParser(add_help=False)
    person.add_argument(
        "--as", dest="who", metavar="NAME", help="who you are (default $SUDO_USER, else $USER)"
    )

    override = sub.add_parser(
        "override",
        help="let one denied migration through, once, approved by a second person",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    cmds = override.add_subparsers(dest="override_command", metavar="COMMAND")
    request = cmds.add_parser(
        "request",
        parents=[common, person],
        help="ask that the next denied migration of VMID to TARGET pass (pending until approved)",
        description="Ask for a one-time override. Exit 0 requested, 2 bad input, 3 unreachable.",
    )
    request.add_argument("vmid", help="the VM id, e.g. 104")
    request.add_argument("target", help="the target node, e.g. pve-xeon-bdw")
    request.add_argument("--reason", required=True, help="why the guard's verdict is wrong here")
    request.add_argument("--ttl", type=int, default=900, help="seconds it lives, from now (60-86400)")
    request.set_defaults(func=run_request)
    for name, verb in (("approve", "approve"), ("reject", "reject (withdraw)")):
        cmd = cmds.add_parser(
            name,
            parents=[common, person],
            help=f"{verb} override ID",
            description=f"{verb.capitalize()} an override. Exit 0 done, 1 refused (your own request, "
            "or expired, spent, rejected), 2 unknown id, 3 unreachable.",
        )
        cmd.add_argument("id", help="the override's id (migration-guard override list)")
        cmd.set_defaults(func=run_decide, action=name)
    listing = cmds.add_parser("list", parents=[common], help="the overrides, newest first")
    listing.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    listing.set_defaults(func=run_list)
    override.set_defaults(func=lambda args: _usage(override))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _who(args: argparse.Namespace) -> str:
    who = (args.who or cli_settings().operator).strip()
    if not who:
        raise InputError("who are you? pass --as NAME ($SUDO_USER and $USER are not set)")
    return who


def run_request(args: argparse.Namespace) -> int:
    vmid, who = vmid_arg(args.vmid), _who(args)
    try:
        with service_client(args) as client:
            body = client.request_override(vmid, args.target, args.reason, args.ttl, who)
    except NotFoundError as exc:
        raise InputError(str(exc)) from None
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    print(
        f"override {body['id']} requested by {body['requested_by']}: VM {body['vmid']} to "
        f"{body['target']}, pending until {body['expires_at']}\n"
        f"a second person approves it with: migration-guard override approve {body['id']}"
    )
    return 0


def run_decide(args: argparse.Namespace) -> int:
    who = _who(args)
    try:
        with service_client(args) as client:
            if args.action == "approve":
                body = client.approve_override(args.id, who)
            else:
                body = client.reject_override(args.id, who)
    except NotFoundError as exc:
        raise InputError(str(exc)) from None
    except ConflictError as exc:
        print(f"migration-guard: refused: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
    elif body["status"] == "approved":
        print(
            f"override {body['id']} approved by {body['approved_by']}: the next denied migration of "
            f"VM {body['vmid']} to {body['target']} before {body['expires_at']} is allowed, once"
        )
    else:
        print(f"override {body['id']} {body['status']} by {who}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with service_client(args) as client:
        overrides = client.overrides(args.limit)
    if args.json:
        print(json.dumps({"overrides": overrides}, indent=2))
    else:
        print(format_overrides(overrides))
    return 0


def format_overrides(overrides: list[dict]) -> str:
    if not overrides:
        return "no overrides"
    header = ["ID", "STATUS", "VMID", "TARGET", "REQUESTED", "APPROVED", "EXPIRES", "REASON"]
    table = [header]
    for o in overrides:
        table.append(
            [
                o["id"],
                o["status"],
                str(o["vmid"]),
                o["target"],
                o["requested_by"],
                o["approved_by"] or "-",
                o["expires_at"][:19].replace("T", " "),
                o["reason"],
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table)
