"""Entry point of ``migration-guard``.

Each command group lives in its own module under ``shared/migration_guard/cli/`` (or ``bot/``) and exposes
``register(subparsers)``; a registered subcommand sets ``func`` (args -> exit code).
Exit codes: 0 ok/allow, 1 deny/not runnable, 2 bad input or configuration, 3 service/cluster unreachable.
Errors of type GuardError print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from migration_guard.errors import GuardError, InputError

#: command-group modules, each with register(subparsers); a missing module is skipped
COMMAND_MODULES = (
    "migration_guard.cli.cpu",
    "migration_guard.cli.serve",
    "migration_guard.cli.client",
    "migration_guard.cli.coverage",
    "migration_guard.cli.hook",
    "migration_guard.cli.remote",
    "migration_guard_bot.cli",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other bad input
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="migration-guard",
        description="Stop Proxmox VE live migrations the target node's CPU cannot run.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command group not built yet
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def _version() -> str:
    """The installed distribution's version (the package's own when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pve-migration-guard")
    except PackageNotFoundError:
        from migration_guard import __version__

        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except InputError as exc:
        print(f"migration-guard: {exc}", file=sys.stderr)
        return 2
    except GuardError as exc:
        print(f"migration-guard: {exc}", file=sys.stderr)
        return 3 if exc.code in ("service-unavailable", "cluster-unreachable") else 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
