"""Installs the node hookscript on one Proxmox VE node and attaches it to that node's VMs.

Runs as root on the node; talks to Proxmox only through its own CLIs (``qm``, ``pvesm``). The work
is split in three: ``hook_node.read_node`` gathers what is there (I/O), ``hook_plan`` decides what to
change (pure: ``NodeState`` -> ``Step`` list), ``hook_node.apply`` changes it. The chain map (the
VMs' previous hookscripts) is ``hook_chain``; the data and option checks are ``hook_options``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from migration_guard.cli.hook_chain import (
    PVE_CLUSTER_CHAIN,
    PVE_CLUSTER_MARKER,
    parse_chain,
    resolve_chain_file,
)
from migration_guard.cli.hook_node import (
    Pve,
    apply,
    attach_targets,
    module_sources,
    parse_pvesm_status,
    parse_qm_list,
    read_node,
    script_source,
)
from migration_guard.cli.hook_options import (
    CONFIG_NAME,
    DEFAULT_CONFIG_DIR,
    DEFAULT_STORAGE,
    SCRIPT_NAME,
    ChainEntry,
    InstallError,
    InstallOptions,
    Step,
    check_options,
    is_ours,
)
from migration_guard.cli.hook_plan import cluster_fs_notes, diff_lines, plan_install, plan_uninstall
from migration_guard.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_DIR",
    "DEFAULT_STORAGE",
    "PVE_CLUSTER_CHAIN",
    "PVE_CLUSTER_MARKER",
    "SCRIPT_NAME",
    "InstallError",
    "InstallOptions",
    "Pve",
    "Report",
    "Status",
    "Step",
    "check_options",
    "check_root",
    "diff_lines",
    "install",
    "parse_chain",
    "parse_pvesm_status",
    "parse_qm_list",
    "resolve_chain_file",
    "status",
    "uninstall",
]

#: the variable tests (and only tests) set to run the installer without root (read through
#: ``CliSettings.installer_skip_root_check``)
SKIP_ROOT_ENV = "MIGRATION_GUARD_INSTALLER_SKIP_ROOT_CHECK"
MISSING_ON_NODE_NOTE = (
    "note: the script must exist on EVERY node a VM may start on (or live on shared storage) "
    "before the VM gets it: a VM whose hookscript file is missing on a node cannot start there. "
    "Run `migration-guard hook install` (without --attach) on every node first."
)


def check_root(skip: bool = False) -> None:
    if skip:
        return
    if os.geteuid() != 0:
        raise InstallError(
            "run this as root on a Proxmox VE node: only root@pam may set a VM's "
            "hookscript (qm set VMID --hookscript ...)"
        )


def check_token_file(path: str | None) -> None:
    if not path:
        return
    try:
        os.stat(path)
    except OSError as exc:
        raise ConfigError(f"--token-file {path}: {exc.strerror or exc}") from None


@dataclass(slots=True)
class Report:
    steps: list[Step]
    notes: list[str]
    applied: bool


def install(opts: InstallOptions, pve: Pve | None = None, skip_root_check: bool = False) -> Report:
    check_options(opts)
    check_root(skip_root_check)
    opts = resolve_chain_file(opts)
    pve = pve or Pve()
    check_token_file(opts.token_file)
    notes: list[str] = []
    state = read_node(opts, pve, attach_targets(opts, pve))
    steps = _module_steps(state.snippets_dir) + plan_install(opts, state, script_source())
    notes += cluster_fs_notes(state)
    if any(s.kind == "set-hookscript" for s in steps):
        notes.append(MISSING_ON_NODE_NOTE)
    if not opts.dry_run:
        apply(steps, pve)
    return Report(steps, notes, not opts.dry_run)


def _module_steps(snippets: Path) -> list[Step]:
    """The hook's modules beside the launcher, written first (the launcher imports them)."""
    steps = []
    for name, content in sorted(module_sources().items()):
        path = snippets / name
        try:
            current = path.read_bytes()
        except OSError:
            current = None
        if current != content:
            steps.append(Step("write-file", f"copy the hook's module to {path} (mode 0644)", path, content))
    return steps


def uninstall(opts: InstallOptions, pve: Pve | None = None, skip_root_check: bool = False) -> Report:
    check_options(opts)
    check_root(skip_root_check)
    opts = resolve_chain_file(opts)
    pve = pve or Pve()
    vmids = pve.vmids()
    state = read_node(opts, pve, vmids)
    steps = plan_uninstall(opts, state)
    notes = [
        f"kept {state.snippets_dir / SCRIPT_NAME} and {opts.config_dir / CONFIG_NAME}: other nodes' "
        "VMs may still use them; remove them by hand once every node is uninstalled"
    ]
    if not opts.dry_run:
        apply(steps, pve)
    return Report(steps, notes, not opts.dry_run)


@dataclass(frozen=True, slots=True)
class Status:
    script: Path
    script_current: bool
    config: Path
    config_present: bool
    attached: tuple[str, ...]
    chain_file: Path
    chained: tuple[ChainEntry, ...]


def status(opts: InstallOptions, pve: Pve | None = None) -> Status:
    check_options(opts)
    opts = resolve_chain_file(opts)
    pve = pve or Pve()
    state = read_node(opts, pve, pve.vmids())
    chain = parse_chain(state.chain_text)
    return Status(
        script=state.snippets_dir / SCRIPT_NAME,
        script_current=state.script_bytes == script_source() and not _module_steps(state.snippets_dir),
        config=opts.config_dir / CONFIG_NAME,
        config_present=state.config_text is not None,
        attached=tuple(v for v, h in state.hookscripts.items() if is_ours(h)),
        chain_file=opts.chain_path,
        chained=tuple(chain[v] for v in sorted(chain, key=int)),
    )
