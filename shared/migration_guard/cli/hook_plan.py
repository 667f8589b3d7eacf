"""What to change on a node (pure): ``NodeState`` -> ``Step`` list, for install and uninstall, and
each written file's change as a diff. ``hook.conf`` and the token file are kept mode 0600, owned by
the installing user (root); a looser mode found on a later run is fixed, and the report says so."""

from __future__ import annotations

import difflib
import os
import pwd
from collections.abc import Mapping
from pathlib import Path

from migration_guard.cli.hook_chain import chain_link_steps, merge_chain, parse_chain, render_chain
from migration_guard.cli.hook_options import (
    CONFIG_KEYS,
    CONFIG_NAME,
    SCRIPT_NAME,
    SECRET_MODE,
    ChainEntry,
    InstallError,
    InstallOptions,
    NodeState,
    Step,
    is_ours,
    parse_kv,
)
from migration_guard.errors import ConfigError

#: the cluster file system (pmxcfs): fixed modes (root:www-data), no chmod
PVE_CLUSTER_FS = Path("/etc/pve")


def render_config(values: Mapping[str, str]) -> str:
    lines = [
        "# migration-guard hookscript config, written by `migration-guard hook install`.",
        "# Keys: " + ", ".join(CONFIG_KEYS) + " (see `migration-guard-hook --help`).",
    ]
    lines += [f"{k} = {values[k]}" for k in CONFIG_KEYS if values.get(k)]
    return "\n".join(lines) + "\n"


def wanted_config(opts: InstallOptions, current_text: str | None) -> str:
    values = {k: v for k, v in parse_kv(current_text or "").items() if k in CONFIG_KEYS}
    given = {
        "url": opts.url,
        "token_file": opts.token_file,
        "mode": opts.mode,
        "fail": opts.fail,
        "timeout": opts.timeout,
        "ca_file": opts.ca_file,
    }
    values.update({k: v for k, v in given.items() if v})
    if not values.get("url"):
        raise ConfigError(
            "no service URL: give --url on the first install "
            f"(or write url = ... in {opts.config_dir / CONFIG_NAME})"
        )
    return render_config(values)


def plan_install(opts: InstallOptions, state: NodeState, script: bytes) -> list[Step]:
    steps: list[Step] = []
    target = state.snippets_dir / SCRIPT_NAME
    if state.script_bytes != script or (state.script_mode or 0) & 0o777 != 0o755:
        steps.append(
            Step("write-file", f"copy the hookscript to {target} (mode 0755)", target, script, 0o755)
        )
    conf_path = opts.config_dir / CONFIG_NAME
    conf = wanted_config(opts, state.config_text)
    if conf != state.config_text:
        steps.append(
            Step(
                "write-file",
                f"write {conf_path} (mode 0600)",
                conf_path,
                conf.encode(),
                SECRET_MODE,
                before=_encoded(state.config_text),
                diff=True,
            )
        )
    steps += _secret_mode_steps(state, conf_path, conf != state.config_text)
    chain = parse_chain(state.chain_text)
    kept = merge_chain(opts, chain, parse_chain(state.linked_chain_text))
    sets: list[Step] = []
    for vmid in sorted(state.hookscripts, key=int):
        current = state.hookscripts[vmid]
        if current == opts.volid:
            continue
        if current and not is_ours(current):
            path = state.previous_paths.get(current)
            if not path:
                raise InstallError(
                    f"VM {vmid} has hookscript {current}, whose file `pvesm path` cannot "
                    "find; fix or remove that hookscript, then run install again"
                )
            chain[vmid] = ChainEntry(vmid, path, current)
            sets.append(
                Step(
                    "set-hookscript",
                    f"VM {vmid}: set hookscript {opts.volid} (runs its previous hookscript {current} first)",
                    vmid=vmid,
                    volid=opts.volid,
                )
            )
        else:
            sets.append(
                Step("set-hookscript", f"VM {vmid}: set hookscript {opts.volid}", vmid=vmid, volid=opts.volid)
            )
    chain_text = render_chain(chain)
    if chain and chain_text != state.chain_text:
        steps.append(
            Step(
                "write-file",
                f"record previous hookscripts in {opts.chain_path}",
                opts.chain_path,
                chain_text.encode(),
                None,
                before=_encoded(state.chain_text),
                diff=True,
            )
        )
    steps += chain_link_steps(opts, state, kept)  # always: VMs of other nodes may migrate here
    return steps + sets


def _encoded(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _secret_mode_steps(state: NodeState, conf_path: Path, conf_written: bool) -> list[Step]:
    """hook.conf and the token file: mode 0600, owned by the installing user (root)."""
    steps = []
    me = os.geteuid()
    for path, (mode, uid) in state.secrets.items():
        if path == conf_path and conf_written:
            continue  # written anew with mode 0600
        if mode & 0o777 == SECRET_MODE and uid == me or path.is_relative_to(PVE_CLUSTER_FS):
            continue  # (pmxcfs sets its own modes: see cluster_fs_notes)
        what = " (it holds the service token)" if path != conf_path else ""
        steps.append(
            Step(
                "fix-mode",
                f"{path}: mode {mode & 0o777:04o} -> {SECRET_MODE:04o}, owner {_user(me)}{what}",
                path,
                mode=SECRET_MODE,
            )
        )
    return steps


def cluster_fs_notes(state: NodeState) -> list[str]:
    return [
        f"warning: {path} is on the cluster file system ({PVE_CLUSTER_FS}), where its mode cannot be "
        "changed and the www-data group may read it; keep the token in /etc/migration-guard/token "
        "(mode 0600) instead"
        for path in state.secrets
        if path.is_relative_to(PVE_CLUSTER_FS)
    ]


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def plan_uninstall(opts: InstallOptions, state: NodeState) -> list[Step]:
    chain = parse_chain(state.chain_text)
    steps: list[Step] = []
    for vmid in sorted(state.hookscripts, key=int):
        current = state.hookscripts[vmid]
        entry = chain.pop(vmid, None)
        if not is_ours(current):
            continue  # not ours (any more): leave it alone, forget the chain entry
        if entry and entry.volid:
            steps.append(
                Step(
                    "set-hookscript",
                    f"VM {vmid}: restore previous hookscript {entry.volid}",
                    vmid=vmid,
                    volid=entry.volid,
                )
            )
        else:
            steps.append(Step("delete-hookscript", f"VM {vmid}: remove hookscript {current}", vmid=vmid))
    if chain != parse_chain(state.chain_text):
        steps.append(
            Step(
                "write-file",
                f"update {opts.chain_path} (VMs of this node removed)",
                opts.chain_path,
                render_chain(chain).encode(),
                None,
            )
        )
    return steps


def diff_lines(step: Step) -> list[str]:
    """A write-file step's change as a unified diff; values of ``token`` lines hidden."""
    if step.kind != "write-file" or not step.diff or step.path is None:
        return []
    old = "" if step.before is None else step.before.decode("utf-8", "replace")
    new = step.content.decode("utf-8", "replace")
    name = str(step.path)
    return [
        _hide_token(line)
        for line in difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            f"{name} (missing)" if step.before is None else name,
            f"{name} (new)",
        )
    ]


def _hide_token(line: str) -> str:
    key, sep, _ = line[1:].partition("=")
    if sep and line[:1] in " +-" and key.strip().lower() == "token":
        return f"{line[0]}{key.rstrip()} = ***\n"
    return line
