"""The node installer's data and plan (pure, standard library only): its options (checked), what it
finds on a node, the chain map (the VMs' previous hookscripts), and what to change: ``NodeState`` ->
``Step`` list, for install and uninstall, with each written text file's change as a diff.

``hook.conf`` and the token file are kept mode 0600, owned by the installing user (root); a looser
mode found on a later run is fixed, and the report says so. The chain map ``chain.conf`` holds lines
``VMID=/abs/path/of/previous/hook storage:snippets/file``; an entry is never lost."""

from __future__ import annotations

import difflib
import os
import pwd
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT_NAME = "migration-guard-hook"
DEFAULT_STORAGE = "local"
CONFIG_NAME = "hook.conf"
CHAIN_NAME = "chain.conf"
CONFIG_KEYS = ("url", "token_file", "token", "timeout", "mode", "fail", "ca_file", "node")
#: hook.conf and the token file: read by root only
SECRET_MODE = 0o600
#: a VM with this tag is never attached by `attach` (nor checked by the service)
SKIP_TAG = "migration-guard-skip"

_VMID = re.compile(r"^[1-9][0-9]{2,8}$")


class InstallError(Exception):
    """The installer cannot go on; the message says what to do (exit 2)."""


@dataclass(frozen=True, slots=True)
class InstallOptions:
    #: the node's file system root ("/"; a folder for staging and tests): every default path is below it
    root: Path = Path("/")
    storage: str = DEFAULT_STORAGE
    snippets_dir: Path | None = None
    config_dir: Path | None = None
    chain_file: Path | None = None
    url: str | None = None
    token_file: str | None = None
    mode: str | None = None
    fail: str | None = None
    timeout: str | None = None
    ca_file: str | None = None
    #: None: attach nothing; ("all",): every VM of this node (templates and skip-tagged VMs aside); else VMIDs
    attach: tuple[str, ...] | None = None
    dry_run: bool = False
    #: install the attach timer with --attach all (the node's new VMs get the hook by themselves)
    timer: bool = True

    @property
    def volid(self) -> str:
        return f"{self.storage}:snippets/{SCRIPT_NAME}"

    @property
    def conf_dir(self) -> Path:
        return self.config_dir or self.root / "etc/migration-guard"

    @property
    def chain_path(self) -> Path:
        return self.chain_file or self.conf_dir / CHAIN_NAME

    @property
    def cluster_fs(self) -> Path:
        """pmxcfs, the cluster file system: fixed modes (root:www-data), no chmod, a cluster-wide lock."""
        return self.root / "etc/pve"

    @property
    def units_dir(self) -> Path:
        return self.root / "etc/systemd/system"


@dataclass(frozen=True, slots=True)
class ChainEntry:
    vmid: str
    path: str
    volid: str


@dataclass(frozen=True, slots=True)
class NodeState:
    """What the installer found on the node."""

    snippets_dir: Path
    #: file name -> (bytes, mode) of the kit's files found in the snippets folder
    kit_files: Mapping[str, tuple[bytes, int]]
    config_text: str | None
    chain_text: str | None
    chain_link: str | None  # readlink of config_dir/chain.conf when it is a symlink
    #: VMID -> current hookscript volid ("" when none), for the VMs that matter
    hookscripts: Mapping[str, str]
    #: volid -> absolute path for previous hookscripts (from pvesm path)
    previous_paths: Mapping[str, str] = field(default_factory=dict)
    #: what config_dir/chain.conf holds today when that is not the chain file: merged into the chain file
    linked_chain_text: str | None = None
    #: path -> (mode, owner uid) of hook.conf and the token file, as found
    secrets: Mapping[Path, tuple[int, int]] = field(default_factory=dict)
    #: unit file name -> its text, as found in the units folder
    units: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Step:
    """One change. ``kind``: write-file, update-chain, symlink, fix-mode, set-hookscript,
    delete-hookscript, write-unit, remove-unit, systemctl (``content``: its arguments)."""

    kind: str
    summary: str
    path: Path | None = None
    content: bytes = b""
    #: None: leave the mode as the file system gives it (pmxcfs has no chmod)
    mode: int | None = 0o644
    vmid: str = ""
    volid: str = ""
    #: write-file of a text file: its content before (None: it does not exist), for the diff
    before: bytes | None = None
    diff: bool = False


def parse_kv(text: str, sep: str = "=") -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, found, value = line.partition(sep)
        if found:
            out.setdefault(key.strip(), value.strip())
    return out


def is_ours(volid: str) -> bool:
    return volid.rsplit("/", 1)[-1] == SCRIPT_NAME


def check_options(opts: InstallOptions) -> None:
    if opts.mode and opts.mode not in ("enforce", "warn", "off"):
        raise InstallError(f"--mode {opts.mode!r}: use enforce, warn or off")
    if opts.fail and opts.fail not in ("open", "closed"):
        raise InstallError(f"--fail {opts.fail!r}: use open or closed")
    if opts.url and not re.match(r"^https?://[^/\s@]+", opts.url):
        raise InstallError(f"--url {opts.url!r}: expected http(s)://host[:port]")
    if opts.timeout:
        try:
            if not 0 < float(opts.timeout) <= 120:
                raise ValueError
        except ValueError:
            raise InstallError(f"--timeout {opts.timeout!r}: seconds between 0 and 120") from None
    for option, value in (
        ("--chain-file", opts.chain_file),
        ("--token-file", opts.token_file),
        ("--ca-file", opts.ca_file),
        ("--root", opts.root),
    ):
        if value is not None and not Path(value).is_absolute():
            raise InstallError(
                f"{option} {value}: give an absolute path (e.g. {Path(value).absolute()}): "
                "the hook runs with another working directory, where a relative path points nowhere"
            )
    if not re.match(r"^[A-Za-z][A-Za-z0-9_.-]*$", opts.storage):
        raise InstallError(f"--storage {opts.storage!r} is not a Proxmox storage name")
    for vmid in opts.attach or ():
        if vmid != "all" and not _VMID.match(vmid):
            raise InstallError(f"--attach {vmid!r}: give `all` or VMIDs (100-999999999)")
    if opts.attach and "all" in opts.attach and len(opts.attach) > 1:
        raise InstallError("--attach: give either `all` or VMIDs, not both")


# --- the chain map -------------------------------------------------------------------------------


def parse_chain(text: str | None) -> dict[str, ChainEntry]:
    out: dict[str, ChainEntry] = {}
    for vmid, value in parse_kv(text or "").items():
        parts = value.split()
        if vmid.isdigit() and parts:
            out[vmid] = ChainEntry(vmid, parts[0], parts[1] if len(parts) > 1 else "")
    return out


def render_chain(entries: Mapping[str, ChainEntry]) -> str:
    lines = [
        "# migration-guard chain map, written by `migration-guard-hook install`.",
        "# VMID=<absolute path of the VM's previous hookscript> <its volume id>; the hook runs it",
        "# first; `migration-guard-hook uninstall` puts the volume id back.",
    ]
    for vmid in sorted(entries, key=int):
        e = entries[vmid]
        lines.append(f"{vmid}={e.path} {e.volid}".rstrip())
    return "\n".join(lines) + "\n"


def rebase_chain(current: str | None, before: str | None, after: str) -> str:
    """The chain map to write when another node changed it since it was read: ``current`` (read
    under the cluster lock) with this run's changes (``before`` -> ``after``) applied."""
    now, old, new = parse_chain(current), parse_chain(before), parse_chain(after)
    for vmid in set(old) - set(new):
        now.pop(vmid, None)
    for vmid, entry in new.items():
        if old.get(vmid) != entry:
            now[vmid] = entry
    return render_chain(now)


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
                f"{opts.conf_dir / CHAIN_NAME} and {have.path} ({have.volid or 'no volume id'}) in "
                f"{opts.chain_path}; delete the wrong line from one of them and run again "
                "(nothing was changed)"
            )
        if have is None:
            chain[vmid] = entry
            merged.append(vmid)
    return merged


def chain_link_steps(opts: InstallOptions, state: NodeState, merged: Sequence[str]) -> list[Step]:
    link = opts.conf_dir / CHAIN_NAME
    if opts.chain_path == link or state.chain_link == str(opts.chain_path):
        return []
    what = f" (its entries for VM {', '.join(merged)} merged into {opts.chain_path})" if merged else ""
    return [Step("symlink", f"link {link} -> {opts.chain_path}{what}", link, str(opts.chain_path).encode())]


# --- install and uninstall -----------------------------------------------------------------------


def render_config(values: Mapping[str, str]) -> str:
    lines = [
        "# migration-guard hookscript config, written by `migration-guard-hook install`.",
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
        raise InstallError(
            "no service URL: give --url on the first install "
            f"(or write url = ... in {opts.conf_dir / CONFIG_NAME})"
        )
    return render_config(values)


def kit_steps(state: NodeState, kit: Mapping[str, bytes]) -> list[Step]:
    """The hook's modules first (the launcher imports them), then the launcher itself (0755)."""
    steps = []
    for name in sorted(kit, key=lambda n: (n == SCRIPT_NAME, n)):
        want_mode = 0o755 if name == SCRIPT_NAME else 0o644
        have, mode = state.kit_files.get(name, (None, 0))
        if have != kit[name] or mode & 0o777 != want_mode:
            target = state.snippets_dir / name
            what = "the hookscript" if name == SCRIPT_NAME else "the hook's module"
            steps.append(
                Step(
                    "write-file",
                    f"copy {what} to {target} (mode {want_mode:04o})",
                    target,
                    kit[name],
                    want_mode,
                )
            )
    return steps


def plan_install(opts: InstallOptions, state: NodeState, kit: Mapping[str, bytes]) -> list[Step]:
    steps = kit_steps(state, kit)
    conf_path = opts.conf_dir / CONFIG_NAME
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
    steps += _secret_mode_steps(opts, state, conf_path, conf != state.config_text)
    chain = parse_chain(state.chain_text)
    kept = merge_chain(opts, chain, parse_chain(state.linked_chain_text))
    sets = _attach_steps(opts, state, chain)
    chain_text = render_chain(chain)
    if chain and chain_text != state.chain_text:
        steps.append(
            Step(
                "update-chain",
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


def _attach_steps(opts: InstallOptions, state: NodeState, chain: dict[str, ChainEntry]) -> list[Step]:
    sets: list[Step] = []
    for vmid in sorted(state.hookscripts, key=int):
        current = state.hookscripts[vmid]
        if current == opts.volid:
            continue
        summary = f"VM {vmid}: set hookscript {opts.volid}"
        if current and not is_ours(current):
            path = state.previous_paths.get(current)
            if not path:
                raise InstallError(
                    f"VM {vmid} has hookscript {current}, whose file `pvesm path` cannot "
                    "find; fix or remove that hookscript, then run install again"
                )
            chain[vmid] = ChainEntry(vmid, path, current)
            summary += f" (runs its previous hookscript {current} first)"
        sets.append(Step("set-hookscript", summary, vmid=vmid, volid=opts.volid))
    return sets


def _encoded(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _secret_mode_steps(
    opts: InstallOptions, state: NodeState, conf_path: Path, conf_written: bool
) -> list[Step]:
    """hook.conf and the token file: mode 0600, owned by the installing user (root)."""
    steps = []
    me = os.geteuid()
    for path, (mode, uid) in state.secrets.items():
        if path == conf_path and conf_written:
            continue  # written anew with mode 0600
        if mode & 0o777 == SECRET_MODE and uid == me or path.is_relative_to(opts.cluster_fs):
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


def cluster_fs_notes(opts: InstallOptions, state: NodeState) -> list[str]:
    return [
        f"warning: {path} is on the cluster file system ({opts.cluster_fs}), where its mode cannot be "
        "changed and the www-data group may read it; keep the token in /etc/migration-guard/token "
        "(mode 0600) instead"
        for path in state.secrets
        if path.is_relative_to(opts.cluster_fs)
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
                "update-chain",
                f"update {opts.chain_path} (VMs of this node removed)",
                opts.chain_path,
                render_chain(chain).encode(),
                None,
                before=_encoded(state.chain_text),
            )
        )
    return steps


def diff_lines(step: Step) -> list[str]:
    """A write step's change as a unified diff; values of ``token`` lines hidden."""
    if not step.diff or step.path is None:
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
