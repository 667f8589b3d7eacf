"""``migration-guard remote-migrate``: a guarded ``qm remote-migrate``, run as root on the source node.

Arguments in qm's order (``VMID [TARGET-VMID] TARGET-ENDPOINT`` and qm's options), with ours mixed
in. Refuses up front what qm would refuse (a locked, HA-managed or replicated VM), asks the service
(POST /v1/decisions naming the target cluster: the decision is recorded, a veto is published like
the hookscript's), refuses an incompatible move, otherwise moves the VM with its hookscript line
handled (shared/migration_guard/cli/remote_migrate.py; docs/cross-cluster.md). The service token comes from
the
environment (MIGRATION_GUARD_TOKEN) or a file (--token-file), never the command line, where ps
shows it to every user of the node.

Exit codes: 0 moved, 1 refused (the target's CPU cannot run the VM), 2 bad input, 3 service or
cluster unreachable or no verdict (nothing changed), 4 qm remote-migrate failed (hookscript put back).
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from migration_guard.cli.remote_migrate import (
    PENDING_FILE,
    Qm,
    execute,
    parse_qm_args,
    plan_move,
    refusal,
    smbios_uuid,
)
from migration_guard.cli.settings import cli_settings
from migration_guard.client import VMID, ServiceClient
from migration_guard.errors import InputError

#: our options (value-taking / flags); everything else after VMID goes to qm remote-migrate
_OURS_VALUE = {
    "--target-cluster": "target_cluster",
    "--target-node": "target_node",
    "--source-cluster": "source_cluster",
    "--source-node": "source_node",
    "--url": "url",
    "--token": "token",
    "--token-file": "token_file",
    "--timeout": "timeout",
    "--pending-file": "pending_file",
}
_OURS_FLAG = {"--allow-unknown": "allow_unknown"}

USAGE = (
    "migration-guard remote-migrate VMID [TARGET-VMID] TARGET-ENDPOINT --target-bridge BRIDGE "
    "--target-storage STORAGE [--online] [--delete] [--bwlimit KIB] --target-cluster NAME "
    "--target-node NODE [--source-cluster NAME] [--allow-unknown] [--token-file FILE] [--url URL]"
)
TOKEN_ON_COMMAND_LINE = (
    "--token would put the service token on the command line, where every user of this node sees it "
    "(ps); give it in the environment (MIGRATION_GUARD_TOKEN) or in a file (--token-file FILE)"
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "remote-migrate",
        help="qm remote-migrate to another cluster, after the service said the target's CPU can run the VM",
        usage=USAGE,
        description="Run as root on the source node, with qm remote-migrate's arguments in its order "
        "(VMID [TARGET-VMID] TARGET-ENDPOINT, then its options) and ours. Refuses a locked, HA-managed "
        "or replicated VM up front, as qm would (exit 2). Asks the migration-guard service whether NODE "
        "of cluster NAME can run the VM; refuses (exit 1) when it cannot. Otherwise removes the VM's "
        "hookscript line (the target cluster lets only root@pam set it), runs qm remote-migrate with "
        "your arguments, puts the line back on the source (after a failure, or when "
        "the source VM is kept) and prints the command that re-attaches it on the target. "
        "Exit 0 moved, 1 refused, 2 bad input, 3 service/cluster unreachable or no verdict, "
        "4 qm remote-migrate failed.",
    )
    parser.add_argument("vmid", help="the VM id on this (source) node, e.g. 101")
    parser.add_argument("--target-cluster", help="the target cluster's name in the service (required)")
    parser.add_argument("--target-node", help="the target node: the node the endpoint's host is (required)")
    parser.add_argument("--source-cluster", help="this cluster's name in the service (default: its default)")
    parser.add_argument(
        "--source-node", help="this node's name (default MIGRATION_GUARD_NODE, else hostname)"
    )
    parser.add_argument(
        "--allow-unknown", action="store_true", help="move even when the service cannot judge"
    )
    parser.add_argument("--url", help="the service (default MIGRATION_GUARD_URL, else http://127.0.0.1:8080)")
    parser.add_argument("--token", help=argparse.SUPPRESS)  # refused: see TOKEN_ON_COMMAND_LINE
    parser.add_argument(
        "--token-file", help="file holding the service's bearer token (default: MIGRATION_GUARD_TOKEN)"
    )
    parser.add_argument("--timeout", default="15", help="seconds to wait for the service")
    parser.add_argument(
        "--pending-file", default=None, help=f"where re-attach commands are recorded (default {PENDING_FILE})"
    )
    parser.add_argument("qm_args", nargs=argparse.REMAINDER, help="passed on to qm remote-migrate")
    parser.set_defaults(func=run)


def split_args(args: argparse.Namespace) -> list[str]:
    """Take our own options out of the remainder (argparse puts everything after VMID there);
    what is left, and everything after ``--``, is qm remote-migrate's."""
    rest = list(args.qm_args)
    qm: list[str] = []
    i = 0
    while i < len(rest):
        tok = rest[i]
        i += 1
        if tok == "--":
            qm.extend(rest[i:])
            break
        name, eq, value = tok.partition("=")
        if name in _OURS_VALUE:
            if not eq:
                if i >= len(rest):
                    raise InputError(f"{name} needs a value")
                value, i = rest[i], i + 1
            setattr(args, _OURS_VALUE[name], value)
        elif tok in _OURS_FLAG:
            setattr(args, _OURS_FLAG[tok], True)
        else:
            qm.append(tok)
    return qm


def read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
        loose = os.stat(path).st_mode & 0o077
    except OSError as exc:
        raise InputError(f"--token-file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"--token-file {path} is not UTF-8 text") from None
    if not token:
        raise InputError(f"--token-file {path} is empty: put the service token in it")
    if loose:
        say(f"warning: token file {path} is readable by other users; run: chmod 600 {path}")
    return token


def run(args: argparse.Namespace) -> int:
    qm_argv = split_args(args)
    if args.token is not None:
        raise InputError(TOKEN_ON_COMMAND_LINE)
    token = read_token(args.token_file) if args.token_file else None
    if not VMID.match(args.vmid):  # Proxmox's pve-vmid: 100 to 999999999, no leading zero
        raise InputError(f"VMID must be a VM id like 101 (100 to 999999999), not {args.vmid!r}")
    vmid = int(args.vmid)
    if not args.target_cluster or not args.target_node:
        raise InputError(f"--target-cluster and --target-node are required: {USAGE}")
    try:
        timeout = float(args.timeout)
    except ValueError:
        raise InputError(f"--timeout {args.timeout!r} is not a number of seconds") from None
    qm_args = parse_qm_args(qm_argv)
    settings = cli_settings()
    source_node = args.source_node or settings.node or os.uname().nodename.split(".")[0]
    qm = Qm(settings.qm)
    config = qm.config(vmid)
    plan = plan_move(
        vmid,
        config,
        qm_args,
        source_node=source_node,
        source_cluster=args.source_cluster or "",
        target_cluster=args.target_cluster,
        target_node=args.target_node,
    )
    why = refusal(vmid)
    if why:
        raise InputError(why)
    token = token if token is not None else settings.token.get_secret_value()
    with ServiceClient(args.url or settings.url, token, timeout=timeout) as client:
        body = client.decide(
            vmid,
            args.target_node,
            source=source_node,
            mode="enforce",
            target_cluster=args.target_cluster,
            source_cluster=args.source_cluster,
            smbios_uuid=smbios_uuid(config) or None,
            cpu=config.get("cpu") or None,
        )
    plan = dataclasses.replace(plan, source_cluster=body.get("source_cluster") or plan.source_cluster)
    verdict = body.get("verdict")
    line = body.get("line") or f"VM {vmid} to {args.target_cluster}/{args.target_node}: verdict {verdict}"
    if verdict == "deny":
        say(f"refused: {line}")
        for reason in body.get("reasons", []):
            say(f"  - [{reason.get('code')}] {reason.get('message')}")
        say(
            "nothing was changed; the veto is recorded"
            + (f" (decision {body['decision_id']})" if body.get("decision_id") else "")
        )
        return 1
    if verdict != "allow":
        if not args.allow_unknown:
            say(f"not moving: {line}")
            say("nothing was changed; to move anyway, run again with --allow-unknown")
            return 3
        say(f"moving although the service could not judge it (--allow-unknown): {line}")
    else:
        say(line)
    return execute(
        plan,
        qm,
        say,
        pending_file=args.pending_file or settings.pending_reattach or PENDING_FILE,
    )


def say(text: str) -> None:
    print(f"migration-guard: {text}", flush=True)
