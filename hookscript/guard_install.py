"""`migration-guard-hook install|attach|status|uninstall`: the node installer (standard library only,
shipped beside the hook: a node needs nothing but its python3).

Runs as root on the node and talks to Proxmox only through its own CLIs (``qm``, ``pvesm``). The work
is split in three: ``guard_pve.read_node`` gathers what is there, ``guard_plan`` decides what to change
(pure), ``guard_pve.apply`` changes it; ``guard_units`` is the attach timer.

Exit codes: 0 done (or nothing to do), 2 bad option, configuration or node state (one line says what).
"""

from __future__ import annotations

import argparse
import os
import py_compile
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from guard_plan import (
    CONFIG_NAME,
    DEFAULT_STORAGE,
    SCRIPT_NAME,
    ChainEntry,
    InstallError,
    InstallOptions,
    Step,
    check_options,
    cluster_fs_notes,
    diff_lines,
    is_ours,
    parse_chain,
    parse_kv,
    plan_install,
    plan_uninstall,
    wanted_config,
)
from guard_pve import Pve, apply, attach_targets, kit_source, read_node, resolve_chain_file
from guard_units import UNITS, timer_off_steps, timer_on_steps

#: tests (and only tests) set it to run the installer without root
SKIP_ROOT_ENV = "MIGRATION_GUARD_INSTALLER_SKIP_ROOT_CHECK"
MISSING_ON_NODE_NOTE = (
    "note: the script must exist on EVERY node a VM may start on (or live on shared storage) "
    "before the VM gets it: a VM whose hookscript file is missing on a node cannot start there. "
    "Run `migration-guard-hook install` (without --attach) on every node first."
)


@dataclass(slots=True)
class Report:
    steps: list[Step]
    notes: list[str]
    applied: bool


def check_root(skip: bool = False) -> None:
    if not skip and os.geteuid() != 0:
        raise InstallError(
            "run this as root on a Proxmox VE node: only root@pam may set a VM's "
            "hookscript (qm set VMID --hookscript ...)"
        )


def _prepare(opts: InstallOptions, skip_root_check: bool) -> InstallOptions:
    check_options(opts)
    check_root(skip_root_check or os.environ.get(SKIP_ROOT_ENV) == "1")
    if opts.token_file:
        try:
            os.stat(opts.token_file)
        except OSError as exc:
            raise InstallError(f"--token-file {opts.token_file}: {exc.strerror or exc}") from None
    return resolve_chain_file(opts)


def _finish(opts: InstallOptions, steps: list[Step], notes: list[str], pve: Pve) -> Report:
    if not opts.dry_run:
        apply(opts, steps, pve)
        for step in steps:  # the hook's bytecode now, not at the first VM start
            if step.path is not None and step.path.suffix == ".py":
                py_compile.compile(str(step.path), doraise=False, quiet=2)
    return Report(steps, notes, not opts.dry_run)


def install(opts: InstallOptions, pve: Pve | None = None, skip_root_check: bool = False) -> Report:
    opts = _prepare(opts, skip_root_check)
    pve = pve or Pve()
    targets, left = attach_targets(opts, pve)
    state = read_node(opts, pve, targets, UNITS)
    steps = plan_install(opts, state, kit_source())
    mode = parse_kv(wanted_config(opts, state.config_text)).get("mode", "enforce")
    if mode == "off":
        steps += timer_off_steps(opts, state)
    elif opts.attach == ("all",) and opts.timer:
        steps += timer_on_steps(opts, state)
    notes = left + cluster_fs_notes(opts, state)
    if any(s.kind == "set-hookscript" for s in steps):
        notes.append(MISSING_ON_NODE_NOTE)
    return _finish(opts, steps, notes, pve)


def attach(opts: InstallOptions, pve: Pve | None = None, skip_root_check: bool = False) -> Report:
    """The timer's run: the hook on every VM of this node that lacks it (templates and VMs tagged
    migration-guard-skip aside), previous hookscripts chained; the installed files stay as they are."""
    opts = _prepare(replace(opts, attach=("all",), timer=False), skip_root_check)
    pve = pve or Pve()
    conf = (opts.conf_dir / CONFIG_NAME).read_text() if (opts.conf_dir / CONFIG_NAME).exists() else None
    if conf is None:
        raise InstallError(
            f"{opts.conf_dir / CONFIG_NAME} is missing: run `migration-guard-hook install` first"
        )
    if parse_kv(conf).get("mode") == "off":
        return Report([], ["mode = off in hook.conf: attaching nothing"], not opts.dry_run)
    targets, left = attach_targets(opts, pve)
    state = read_node(opts, pve, targets)
    if SCRIPT_NAME not in state.kit_files:
        raise InstallError(
            f"{state.snippets_dir / SCRIPT_NAME} is missing: run `migration-guard-hook install` first"
        )
    installed = {name: data for name, (data, _) in state.kit_files.items()}
    steps = [s for s in plan_install(opts, state, installed) if s.kind != "write-file"]
    return _finish(opts, steps, left, pve)


def uninstall(opts: InstallOptions, pve: Pve | None = None, skip_root_check: bool = False) -> Report:
    opts = _prepare(opts, skip_root_check)
    pve = pve or Pve()
    state = read_node(opts, pve, pve.vmids(), UNITS)
    steps = timer_off_steps(opts, state) + plan_uninstall(opts, state)
    notes = [
        f"kept {state.snippets_dir / SCRIPT_NAME} and {opts.conf_dir / CONFIG_NAME}: other nodes' "
        "VMs may still use them; remove them by hand once every node is uninstalled"
    ]
    return _finish(opts, steps, notes, pve)


@dataclass(frozen=True, slots=True)
class Status:
    script: Path
    script_current: bool
    config: Path
    config_present: bool
    attached: tuple[str, ...]
    chain_file: Path
    chained: tuple[ChainEntry, ...]
    timer: bool


def status(opts: InstallOptions, pve: Pve | None = None) -> Status:
    check_options(opts)
    opts = resolve_chain_file(opts)
    pve = pve or Pve()
    state = read_node(opts, pve, pve.vmids(), UNITS)
    chain = parse_chain(state.chain_text)
    kit = kit_source()
    return Status(
        script=state.snippets_dir / SCRIPT_NAME,
        script_current=all(state.kit_files.get(n, (None, 0))[0] == data for n, data in kit.items()),
        config=opts.conf_dir / CONFIG_NAME,
        config_present=state.config_text is not None,
        attached=tuple(v for v, h in state.hookscripts.items() if is_ours(h)),
        chain_file=opts.chain_path,
        chained=tuple(chain[v] for v in sorted(chain, key=int)),
        timer=bool(state.units),
    )


# --- the command line ----------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage", default=DEFAULT_STORAGE, help="storage with the `snippets` content type (local)"
    )
    p.add_argument(
        "--snippets-dir", type=Path, metavar="DIR", help="its snippets folder (default: `pvesm path`)"
    )
    p.add_argument(
        "--config-dir",
        type=Path,
        metavar="DIR",
        help="where hook.conf and chain.conf live (/etc/migration-guard)",
    )
    p.add_argument(
        "--chain-file",
        type=Path,
        metavar="FILE",
        help="keep the chain map (previous hookscripts) here (absolute); CONFIG_DIR/chain.conf links to it. "
        "Default on a cluster node: /etc/pve/migration-guard/chain.conf (shared by every node)",
    )
    p.add_argument(
        "--root", type=Path, default=Path("/"), metavar="DIR", help="the node's root (staging, tests)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the plan, with each file's diff; change nothing"
    )


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Install the migration-guard hookscript on this node."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    inst = sub.add_parser("install", help="copy the hook, write the config, optionally attach it to VMs")
    _common(inst)
    inst.add_argument("--url", help="the migration-guard service, e.g. https://guard.example:8443")
    inst.add_argument(
        "--token-file", metavar="FILE", help="file holding the service token (absolute; made 0600)"
    )
    inst.add_argument("--mode", choices=("enforce", "warn", "off"), help="enforce (default), warn, off")
    inst.add_argument(
        "--fail", choices=("open", "closed"), help="without a decision: open (default) or closed"
    )
    inst.add_argument("--timeout", metavar="SECONDS", help="whole-run limit of the hook (default 3)")
    inst.add_argument("--ca-file", metavar="FILE", help="CA bundle for the service's HTTPS certificate")
    inst.add_argument(
        "--attach",
        nargs="+",
        metavar="all|VMID",
        help="set the hookscript on this node's VMs (all) or these VMIDs",
    )
    inst.add_argument(
        "--no-timer", action="store_true", help="with --attach all: no attach timer for later VMs"
    )
    for name, text in (
        ("attach", "attach the hook to this node's VMs that lack it (what the timer runs)"),
        ("uninstall", "give this node's VMs their previous hookscripts back; stop the timer"),
        ("status", "show what is installed on this node"),
    ):
        _common(sub.add_parser(name, help=text))
    return parser


def _options(args: argparse.Namespace) -> InstallOptions:
    return InstallOptions(
        root=args.root,
        storage=args.storage,
        snippets_dir=args.snippets_dir,
        config_dir=args.config_dir,
        chain_file=args.chain_file,
        url=getattr(args, "url", None),
        token_file=getattr(args, "token_file", None),
        mode=getattr(args, "mode", None),
        fail=getattr(args, "fail", None),
        timeout=getattr(args, "timeout", None),
        ca_file=getattr(args, "ca_file", None),
        attach=tuple(args.attach) if getattr(args, "attach", None) else None,
        dry_run=args.dry_run,
        timer=not getattr(args, "no_timer", False),
    )


def print_report(report: Report, verb: str) -> None:
    if not report.steps:
        print(f"nothing to change: {verb} is already complete on this node")
    else:
        print("plan (dry run, nothing changed):" if not report.applied else "done:")
        for step in report.steps:
            print(f"  - {step.summary}")
            if not report.applied:  # the exact change of each text file (token values hidden)
                print("".join(diff_lines(step)), end="")
    for note in report.notes:
        print(note, file=sys.stderr)


def print_status(st: Status) -> None:
    print(f"script:   {st.script} ({'current' if st.script_current else 'missing or outdated'})")
    print(f"config:   {st.config} ({'present' if st.config_present else 'missing'})")
    print(f"attached: {', '.join(st.attached) if st.attached else 'no VM of this node'}")
    print(f"chain:    {st.chain_file}")
    print(f"timer:    {'installed (migration-guard-attach.timer)' if st.timer else 'not installed'}")
    for e in st.chained:
        print(f"chained:  VM {e.vmid} runs {e.path} ({e.volid or 'no volume id'}) first")


def main(argv: list[str]) -> int:
    args = build_parser(os.path.basename(argv[0]) or SCRIPT_NAME).parse_args(argv[1:])
    try:
        opts = _options(args)
        if args.command == "status":
            print_status(status(opts))
            return 0
        run = {"install": install, "attach": attach, "uninstall": uninstall}[args.command]
        print_report(run(opts), args.command)
    except InstallError as exc:
        print(f"migration-guard-hook {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0
