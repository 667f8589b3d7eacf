"""`migration-guard-hook rollout`: the node kit's cluster install (standard library only), run by the
kit's shell script (GET /v1/node-kit) on the node where the operator pasted it.

Two phases, so that no VM ever gets a hookscript some node lacks (such a VM cannot start there):
1. files: on EVERY node (`pvecm nodes`; others over the root SSH Proxmox sets up between its nodes)
   the kit's files, the token file (mode 0600) and hook.conf; no VM attached;
2. attach: only when every node passed phase 1, on every node `install --attach all` (this node's
   VMs, templates and migration-guard-skip VMs aside) and the attach timer.
A node that fails is named with its error; when any fails phase 1, nothing is attached anywhere.

The kit travels to another node as a tar stream on ssh's stdin (the token inside it, mode 0600): it
never appears on a command line (`ps`) nor in what this prints."""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from guard_install import SKIP_ROOT_ENV, install, print_report
from guard_plan import SCRIPT_NAME, InstallError, InstallOptions
from guard_pve import Pve, parse_pvecm_nodes

#: tests (and only tests) set it: the node's root folder for `--this-node` runs
ROOT_ENV = "MIGRATION_GUARD_INSTALLER_ROOT"
TOKEN_NAME = "token"
SSH = ("ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10")


@dataclass(frozen=True, slots=True)
class Outcome:
    node: str
    ok: bool
    output: str


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{prog} rollout", description="Install the node kit on this node or all."
    )
    p.add_argument("--all-nodes", action="store_true", help="every node of the cluster (`pvecm nodes`)")
    p.add_argument("--no-attach", action="store_true", help="files and config only; attach no VM")
    p.add_argument("--url", help="the service as the nodes reach it (default: the kit's)")
    p.add_argument("--token-file", help="a token file already on every node (default: the kit's token)")
    p.add_argument("--mode", choices=("enforce", "warn", "off"))
    p.add_argument("--fail", choices=("open", "closed"))
    p.add_argument("--storage", default="local")
    p.add_argument("--this-node", choices=("files", "attach"), help=argparse.SUPPRESS)
    return p


def _kit_dir() -> Path:
    return Path(__file__).resolve().parent


def _install_args(args: argparse.Namespace) -> list[str]:
    out = ["--storage", args.storage]
    for name in ("url", "token_file", "mode", "fail"):
        value = getattr(args, name)
        if value:
            out += ["--" + name.replace("_", "-"), value]
    return out


def this_node(args: argparse.Namespace) -> int:
    """One node's phase, run from the kit's folder on that node."""
    root = Path(os.environ.get(ROOT_ENV) or "/")
    token_file = args.token_file or str(root / "etc/migration-guard" / TOKEN_NAME)
    opts = InstallOptions(
        root=root,
        storage=args.storage,
        url=args.url,
        token_file=token_file,
        mode=args.mode,
        fail=args.fail,
        attach=("all",) if args.this_node == "attach" else None,
    )
    skip_root = os.environ.get(SKIP_ROOT_ENV) == "1"
    try:
        if args.this_node == "files" and not args.token_file:
            _place_token(_kit_dir() / TOKEN_NAME, Path(token_file))
        report = install(opts, skip_root_check=skip_root)
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_report(report, "install")
    return 0


def _place_token(source: Path, target: Path) -> None:
    try:
        token = source.read_bytes()
    except OSError:
        raise InstallError("the kit carries no token: give --token-file (a file on every node)") from None
    try:
        if target.exists() and target.read_bytes() == token and target.stat().st_mode & 0o777 == 0o600:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(token)
        os.chmod(target.with_suffix(".tmp"), 0o600)
        os.replace(target.with_suffix(".tmp"), target)
    except OSError as exc:
        raise InstallError(f"cannot write the token file {target}: {exc.strerror or exc}") from None


def _kit_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(_kit_dir().iterdir()):
            if path.is_file() and (path.name in (SCRIPT_NAME, TOKEN_NAME) or path.suffix == ".py"):
                tar.add(str(path), arcname=path.name)
    return buf.getvalue()


def member_ips(root: Path) -> dict[str, str]:
    """Node name -> IP from pmxcfs's /etc/pve/.members (what Proxmox itself connects to between
    nodes: pve-cluster PVE::SSHInfo get_ssh_info); {} when it cannot be read."""
    try:
        nodelist = json.loads((root / "etc/pve/.members").read_text()).get("nodelist", {})
        return {str(name): str(info["ip"]) for name, info in nodelist.items() if info.get("ip")}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


def ssh_target(node: str, ips: dict[str, str]) -> list[str]:
    """As PVE::SSHInfo ssh_info_to_command: root@IP, the node's name as the host key's alias."""
    return ["-o", f"HostKeyAlias={node}", f"root@{ips[node]}"] if node in ips else [f"root@{node}"]


def run_on(node: str, local: str, argv: list[str], kit: bytes, ips: dict[str, str] | None = None) -> Outcome:
    """``migration-guard-hook rollout ARGV`` on ``node`` (this one directly, another over ssh)."""
    if node == local:
        cmd = [sys.executable, "-I", "-S", str(_kit_dir() / SCRIPT_NAME), "rollout", *argv]
        here = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
        return Outcome(node, here.returncode == 0, (here.stdout + here.stderr).strip())
    remote = (
        'd=$(mktemp -d) && tar -x -C "$d" && python3 -IS "$d/'
        + SCRIPT_NAME
        + '" rollout '
        + " ".join(shlex.quote(a) for a in argv)
        + '; rc=$?; rm -rf "$d"; exit $rc'
    )
    try:
        argv_ssh = [*SSH, *ssh_target(node, ips or {}), remote]
        proc = subprocess.run(argv_ssh, input=kit, capture_output=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Outcome(node, False, f"ssh failed: {exc}")
    text = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip()
    return Outcome(node, proc.returncode == 0, text)


def cluster_nodes(pve: Pve) -> tuple[list[str], str]:
    """-> (every node's name, this node's name) from `pvecm nodes`."""
    text = pve.run("pvecm", "nodes")
    names = parse_pvecm_nodes(text)
    local = next((line.split()[2] for line in text.splitlines() if "(local)" in line), "")
    if not names or not local:
        raise InstallError(
            "`pvecm nodes` lists no nodes: is this node in a cluster? (without --all-nodes: this node)"
        )
    return names, local


def _report(phase: str, outcomes: list[Outcome]) -> bool:
    for o in outcomes:
        last = o.output.splitlines()[-1] if o.output else ""
        attached = sum(": set hookscript " in line for line in o.output.splitlines())
        what = (
            f" ({attached} VM(s) attached)"
            if attached
            else " (no change)"
            if "nothing to change" in o.output
            else ""
        )
        print(f"{o.node}: {phase} {'ok' + what if o.ok else 'FAILED: ' + last}")
    return all(o.ok for o in outcomes)


def rollout(args: argparse.Namespace) -> int:
    pve = Pve()
    try:
        if args.all_nodes:
            nodes, local = cluster_nodes(pve)
        else:
            local = os.uname().nodename.split(".")[0]
            nodes = [local]
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kit = _kit_tar() if nodes != [local] else b""
    ips = member_ips(Path(os.environ.get(ROOT_ENV) or "/"))
    base = _install_args(args)
    print(f"phase 1 of 2: the hook's files and config on {len(nodes)} node(s): {', '.join(nodes)}")
    if not _report("files", [run_on(n, local, ["--this-node", "files", *base], kit, ips) for n in nodes]):
        print("nothing was attached on any node: fix the nodes named FAILED above and paste the kit again")
        return 1
    if args.no_attach:
        print("done: files on every node; no VM attached (--no-attach)")
        return 0
    print("phase 2 of 2: every node has the hook; attaching each node's VMs and starting its attach timer")
    if not _report("attach", [run_on(n, local, ["--this-node", "attach", *base], kit, ips) for n in nodes]):
        print("the nodes named FAILED above have VMs without the guard: fix them and paste the kit again")
        return 1
    print("done: every node guards its VMs; new VMs get the hook within 5 minutes (the attach timer)")
    return 0


def main(argv: list[str]) -> int:
    args = build_parser(os.path.basename(argv[0]) or SCRIPT_NAME).parse_args(argv[2:])
    if args.this_node:
        return this_node(args)
    return rollout(args)
