"""The chain map: the hookscript each VM had before migration-guard, which the hook runs first and
``uninstall`` puts back (``chain.conf``, lines ``VMID=/abs/path/of/previous/hook storage:snippets/file``).

By default it sits next to ``hook.conf``; with ``chain_file`` elsewhere (e.g. on the cluster file
system ``/etc/pve/migration-guard/chain.conf``, shared by every node) the config dir gets a symlink
``chain.conf`` pointing to it, so the hook finds it without reading anything else. An entry is never
lost: what the config dir's ``chain.conf`` held before is merged into the new chain file (two
different previous hookscripts for one VM: refused, nothing changed)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from migration_guard.cli.hook_options import (
    CHAIN_NAME,
    DEFAULT_CONFIG_DIR,
    ChainEntry,
    InstallError,
    InstallOptions,
    NodeState,
    Step,
    parse_kv,
)

#: the chain map on the cluster file system, shared by every node (default on a cluster node)
PVE_CLUSTER_CHAIN = Path("/etc/pve/migration-guard/chain.conf")
PVE_CLUSTER_MARKER = Path("/etc/pve/.members")


def parse_chain(text: str | None) -> dict[str, ChainEntry]:
    out: dict[str, ChainEntry] = {}
    for vmid, value in parse_kv(text or "").items():
        parts = value.split()
        if vmid.isdigit() and parts:
            out[vmid] = ChainEntry(vmid, parts[0], parts[1] if len(parts) > 1 else "")
    return out


def render_chain(entries: Mapping[str, ChainEntry]) -> str:
    lines = [
        "# migration-guard chain map, written by `migration-guard hook install`.",
        "# VMID=<absolute path of the VM's previous hookscript> <its volume id>; the hook runs it",
        "# first; `migration-guard hook uninstall` puts the volume id back.",
    ]
    for vmid in sorted(entries, key=int):
        e = entries[vmid]
        lines.append(f"{vmid}={e.path} {e.volid}".rstrip())
    return "\n".join(lines) + "\n"


def merge_chain(
    opts: InstallOptions, chain: dict[str, ChainEntry], linked: Mapping[str, ChainEntry]
) -> list[str]:
    """Add the entries config_dir/chain.conf holds today to ``chain``: none may be lost when the
    link replaces it. Returns the VMIDs merged; InstallError on two different entries for a VM."""
    merged = []
    for vmid in sorted(linked, key=int):
        entry, have = linked[vmid], chain.get(vmid)
        if have is not None and have != entry:
            raise InstallError(
                f"VM {vmid} has two previous hookscripts: {entry.path} ({entry.volid or 'no volume id'}) in "
                f"{opts.config_dir / CHAIN_NAME} and {have.path} ({have.volid or 'no volume id'}) in "
                f"{opts.chain_path}; delete the wrong line from one of them and run again "
                "(nothing was changed)"
            )
        if have is None:
            chain[vmid] = entry
            merged.append(vmid)
    return merged


def chain_link_steps(opts: InstallOptions, state: NodeState, merged: Sequence[str]) -> list[Step]:
    link = opts.config_dir / CHAIN_NAME
    if opts.chain_path == link or state.chain_link == str(opts.chain_path):
        return []
    what = f" (its entries for VM {', '.join(merged)} merged into {opts.chain_path})" if merged else ""
    return [Step("symlink", f"link {link} -> {opts.chain_path}{what}", link, str(opts.chain_path).encode())]


def link_target(link: Path) -> Path | None:
    """Where the symlink ``link`` points (a relative target read from the link's folder), or None."""
    if not link.is_symlink():
        return None
    return link.parent / os.readlink(link)


def resolve_chain_file(opts: InstallOptions) -> InstallOptions:
    """Where the chain map lives when --chain-file is not given.

    An earlier install's link CONFIG_DIR/chain.conf -> FILE keeps FILE. Else, on a cluster node with
    the default config dir, the cluster file system (shared by every node, so a VM's previous
    hookscript still runs after it migrates); else CONFIG_DIR/chain.conf.
    """
    if opts.chain_file is not None:
        return opts
    link = opts.config_dir / CHAIN_NAME
    target = link_target(link)
    if target is not None:
        return replace(opts, chain_file=target)
    if opts.config_dir == DEFAULT_CONFIG_DIR and not link.exists() and PVE_CLUSTER_MARKER.exists():
        return replace(opts, chain_file=PVE_CLUSTER_CHAIN)
    return opts
