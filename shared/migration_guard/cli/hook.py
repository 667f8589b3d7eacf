"""``migration-guard hook install|attach|status|uninstall``: the node installer shipped with the hook.

One implementation: this command runs ``migration-guard-hook COMMAND ...`` (the hook's launcher and
its standard-library modules, packaged as ``migration_guard_hook``) with this interpreter in
isolated mode, exactly as a node without this package runs it from the node kit. Its options, output
and exit codes are the installer's (0 done or nothing to do, 2 bad option or node state).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import resources

COMMANDS = ("install", "attach", "status", "uninstall")
SCRIPT_NAME = "migration-guard-hook"


def register(subparsers) -> None:
    hook = subparsers.add_parser(
        "hook",
        help="install the node hookscript that vetoes CPU-incompatible live migrations",
        description="Install, attach, inspect or remove the migration-guard hookscript on this Proxmox VE "
        f"node (as root): {', '.join(COMMANDS)}; `migration-guard hook COMMAND --help` for each. "
        "The same as `migration-guard-hook COMMAND` from the node kit (GET /v1/node-kit).",
        add_help=False,
    )
    hook.add_argument("rest", nargs=argparse.REMAINDER, metavar="COMMAND ...")
    hook.set_defaults(func=_run, hook_parser=hook)


def _run(args: argparse.Namespace) -> int:
    if not args.rest or args.rest[0] not in COMMANDS:
        args.hook_parser.print_help(sys.stderr)
        return 2
    with resources.as_file(resources.files("migration_guard_hook") / SCRIPT_NAME) as launcher:
        return subprocess.run([sys.executable, "-I", "-S", str(launcher), *args.rest]).returncode
