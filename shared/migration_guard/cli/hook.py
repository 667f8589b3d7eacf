"""``migration-guard hook install|uninstall|status``: put the node hookscript in place (as root, on a node).

Exit codes: 0 done (or nothing to do), 2 bad option, configuration or node state (one line says what).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from migration_guard.cli.hook_installer import (
    DEFAULT_CONFIG_DIR,
    DEFAULT_STORAGE,
    SCRIPT_NAME,
    InstallOptions,
    Report,
    diff_lines,
    install,
    status,
    uninstall,
)
from migration_guard.cli.settings import cli_settings


def register(subparsers) -> None:
    hook = subparsers.add_parser(
        "hook",
        help="install the node hookscript that vetoes CPU-incompatible live migrations",
        description="Install, remove or inspect the migration-guard hookscript on this Proxmox VE node "
        "(run as root on the node; repeat on every node).",
    )
    sub = hook.add_subparsers(dest="hook_command", metavar="COMMAND", parser_class=type(hook))
    hook.set_defaults(func=lambda args: _usage(hook))

    _add_install(sub)

    uninst = sub.add_parser(
        "uninstall",
        help="give this node's VMs their previous hookscripts back",
        description="Give every VM of this node that has the migration-guard hookscript its previous "
        "hookscript back (or none). The script and config stay for other nodes' VMs.",
    )
    _common(uninst)
    uninst.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    uninst.set_defaults(func=_uninstall)

    stat = sub.add_parser(
        "status",
        help="show what is installed on this node",
        description="Show the script, config, attached VMs and chained hookscripts.",
    )
    _common(stat)
    stat.set_defaults(func=_status)


def _common(p: argparse.ArgumentParser) -> None:
    """The options every hook command takes: where the script, its config and the chain map live."""
    p.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help="storage with the `snippets` content type for the script (default: local)",
    )
    p.add_argument(
        "--snippets-dir",
        type=Path,
        metavar="DIR",
        help="the storage's snippets folder (default: asked from `pvesm path`)",
    )
    p.add_argument(
        "--config-dir",
        type=Path,
        default=DEFAULT_CONFIG_DIR,
        metavar="DIR",
        help="where hook.conf and chain.conf live (default: /etc/migration-guard)",
    )
    p.add_argument(
        "--chain-file",
        type=Path,
        metavar="FILE",
        help="keep the chain map (previous hookscripts) here (an absolute path); "
        "CONFIG_DIR/chain.conf then links to it (its entries merged in first) and later "
        "runs keep it. Default on a cluster node: "
        "/etc/pve/migration-guard/chain.conf (shared by every node), else "
        "CONFIG_DIR/chain.conf",
    )


def _add_install(sub) -> None:
    inst = sub.add_parser(
        "install",
        help="copy the script, write the config, optionally attach it to VMs",
        description=f"Copy {SCRIPT_NAME} to the snippets storage, write CONFIG_DIR/hook.conf and, with "
        "--attach, set it as hookscript of this node's VMs (their previous hookscript keeps "
        "running first). Running it twice changes nothing the second time.",
    )
    _common(inst)
    inst.add_argument("--url", help="the migration-guard service, e.g. https://guard.example:8443")
    inst.add_argument(
        "--token-file",
        metavar="FILE",
        help="file holding the service token (an absolute path; set to mode 0600, owner root)",
    )
    inst.add_argument("--mode", choices=("enforce", "warn", "off"), help="enforce (default), warn, off")
    inst.add_argument(
        "--fail",
        choices=("open", "closed"),
        help="without a decision: open (default, allow) or closed (block)",
    )
    inst.add_argument("--timeout", metavar="SECONDS", help="whole-run limit of the hook (default 3)")
    inst.add_argument("--ca-file", metavar="FILE", help="CA bundle for the service's HTTPS certificate")
    inst.add_argument(
        "--attach",
        nargs="+",
        metavar="all|VMID",
        help="set the hookscript on every VM of this node (all) or on these VMIDs",
    )
    inst.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan, with a diff of each file it would write; change nothing",
    )
    inst.set_defaults(func=_install)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _options(args: argparse.Namespace) -> InstallOptions:
    return InstallOptions(
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
        dry_run=getattr(args, "dry_run", False),
    )


def _print_report(report: Report, verb: str) -> None:
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


def _skip_root_check() -> bool:
    return cli_settings().installer_skip_root_check == "1"


def _install(args: argparse.Namespace) -> int:
    _print_report(install(_options(args), skip_root_check=_skip_root_check()), "install")
    return 0


def _uninstall(args: argparse.Namespace) -> int:
    _print_report(uninstall(_options(args), skip_root_check=_skip_root_check()), "uninstall")
    return 0


def _status(args: argparse.Namespace) -> int:
    st = status(_options(args))
    print(f"script:   {st.script} ({'current' if st.script_current else 'missing or outdated'})")
    print(f"config:   {st.config} ({'present' if st.config_present else 'missing'})")
    print(f"attached: {', '.join(st.attached) if st.attached else 'no VM of this node'}")
    print(f"chain:    {st.chain_file}")
    for e in st.chained:
        print(f"chained:  VM {e.vmid} runs {e.path} ({e.volid or 'no volume id'}) first")
    return 0
