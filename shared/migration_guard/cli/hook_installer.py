"""Installs the node hookscript on one Proxmox VE node and attaches it to that node's VMs.

Runs as root on the node; talks to Proxmox only through its own CLIs (``qm``, ``pvesm``), because
only ``root@pam`` may set a VM's ``hookscript`` option. The work is split in three:

* ``read_node``   gathers what is there (I/O: qm, pvesm, files),
* ``plan_install`` / ``plan_uninstall`` decide what to change (pure: ``NodeState`` -> ``Step`` list),
* ``apply``       changes it, in order: script, config, chain map, then each VM's hookscript.

The chain map (``chain.conf``, lines ``VMID=/abs/path/of/previous/hook storage:snippets/file``)
records the hookscript a VM had before; the hook runs that one first, and ``uninstall`` puts it
back. By default it sits next to ``hook.conf``; with ``chain_file`` elsewhere (e.g. on the cluster
file system ``/etc/pve/migration-guard/chain.conf``, shared by every node) the config dir gets a
symlink ``chain.conf`` pointing to it, so the hook finds it without reading anything else. An entry
is never lost: what the config dir's ``chain.conf`` held before is merged into the new chain file
(two different previous hookscripts for one VM: refused, nothing changed).

``hook.conf`` and the token file are kept mode 0600, owned by the installing user (root); a looser
mode found on a later run is fixed, and the report says so.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from migration_guard.errors import ConfigError, GuardError

SCRIPT_NAME = "migration-guard-hook"
DEFAULT_STORAGE = "local"
DEFAULT_CONFIG_DIR = Path("/etc/migration-guard")
CONFIG_NAME = "hook.conf"
CHAIN_NAME = "chain.conf"
#: the chain map on the cluster file system, shared by every node (default on a cluster node)
PVE_CLUSTER_CHAIN = Path("/etc/pve/migration-guard/chain.conf")
PVE_CLUSTER_MARKER = Path("/etc/pve/.members")
#: the cluster file system (pmxcfs): fixed modes (root:www-data), no chmod
PVE_CLUSTER_FS = Path("/etc/pve")
#: tests (and only tests) set this to run the installer without root
SKIP_ROOT_ENV = "MIGRATION_GUARD_INSTALLER_SKIP_ROOT_CHECK"
CONFIG_KEYS = ("url", "token_file", "token", "timeout", "mode", "fail", "ca_file", "node")
#: hook.conf and the token file: read by root only
SECRET_MODE = 0o600
MISSING_ON_NODE_NOTE = (
    "note: the script must exist on EVERY node a VM may start on (or live on shared storage) "
    "before the VM gets it: a VM whose hookscript file is missing on a node cannot start there. "
    "Run `migration-guard hook install` (without --attach) on every node first."
)

_VMID = re.compile(r"^[1-9][0-9]{2,8}$")
_VOLID = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*:snippets/[^\s/]+$")


class InstallError(GuardError):
    """The installer cannot go on; the message says what to do."""

    code = "install-error"


# --- data ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class InstallOptions:
    storage: str = DEFAULT_STORAGE
    snippets_dir: Path | None = None
    config_dir: Path = DEFAULT_CONFIG_DIR
    chain_file: Path | None = None
    url: str | None = None
    token_file: str | None = None
    mode: str | None = None
    fail: str | None = None
    timeout: str | None = None
    ca_file: str | None = None
    #: None: attach nothing; ("all",): every VM of this node; else VMIDs
    attach: tuple[str, ...] | None = None
    dry_run: bool = False

    @property
    def volid(self) -> str:
        return f"{self.storage}:snippets/{SCRIPT_NAME}"

    @property
    def chain_path(self) -> Path:
        return self.chain_file or self.config_dir / CHAIN_NAME


@dataclass(frozen=True, slots=True)
class ChainEntry:
    vmid: str
    path: str
    volid: str


@dataclass(frozen=True, slots=True)
class NodeState:
    """What the installer found on the node."""

    snippets_dir: Path
    script_bytes: bytes | None
    script_mode: int | None
    config_text: str | None
    chain_text: str | None
    chain_link: str | None  # readlink of config_dir/chain.conf when it is a symlink
    #: VMID -> current hookscript volid ("" when none), for the VMs that matter
    hookscripts: Mapping[str, str]
    #: volid -> absolute path for previous hookscripts (from pvesm path)
    previous_paths: Mapping[str, str] = field(default_factory=dict)
    #: what config_dir/chain.conf holds today when that is not the chain file (a regular file, or
    #: a link to another file): merged into the chain file before the link replaces it
    linked_chain_text: str | None = None
    #: path -> (mode, owner uid) of hook.conf and the token file, as found
    secrets: Mapping[Path, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Step:
    """One change. ``kind``: write-file, symlink, fix-mode, set-hookscript, delete-hookscript."""

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


# --- pure parsing / rendering -------------------------------------------------------------------

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


def parse_chain(text: str | None) -> dict[str, ChainEntry]:
    out: dict[str, ChainEntry] = {}
    for vmid, value in parse_kv(text or "").items():
        parts = value.split()
        if vmid.isdigit() and parts:
            out[vmid] = ChainEntry(vmid, parts[0], parts[1] if len(parts) > 1 else "")
    return out


def render_chain(entries: Mapping[str, ChainEntry]) -> str:
    lines = ["# migration-guard chain map, written by `migration-guard hook install`.",
             "# VMID=<absolute path of the VM's previous hookscript> <its volume id>; the hook runs it",
             "# first; `migration-guard hook uninstall` puts the volume id back."]
    for vmid in sorted(entries, key=int):
        e = entries[vmid]
        lines.append(f"{vmid}={e.path} {e.volid}".rstrip())
    return "\n".join(lines) + "\n"


def render_config(values: Mapping[str, str]) -> str:
    lines = ["# migration-guard hookscript config, written by `migration-guard hook install`.",
             "# Keys: " + ", ".join(CONFIG_KEYS) + " (see `migration-guard-hook --help`)."]
    lines += [f"{k} = {values[k]}" for k in CONFIG_KEYS if values.get(k)]
    return "\n".join(lines) + "\n"


def parse_qm_list(text: str) -> list[str]:
    """VMIDs from `qm list` (header `VMID NAME STATUS MEM(MB) BOOTDISK(GB) PID`)."""
    ids = []
    for line in text.splitlines():
        first = line.split(None, 1)[0] if line.strip() else ""
        if first.isdigit():
            ids.append(first)
    return ids


def parse_pvesm_status(text: str) -> dict[str, str]:
    """Storage name -> status from `pvesm status` (header `Name Type Status Total Used Available %`)."""
    out = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            out[parts[0]] = parts[2]
    return out


def script_source() -> bytes:
    return (resources.files("migration_guard_hook") / SCRIPT_NAME).read_bytes()


def wanted_config(opts: InstallOptions, current_text: str | None) -> str:
    values = {k: v for k, v in parse_kv(current_text or "").items() if k in CONFIG_KEYS}
    given = {"url": opts.url, "token_file": opts.token_file, "mode": opts.mode, "fail": opts.fail,
             "timeout": opts.timeout, "ca_file": opts.ca_file}
    values.update({k: v for k, v in given.items() if v})
    if not values.get("url"):
        raise ConfigError("no service URL: give --url on the first install "
                          f"(or write url = ... in {opts.config_dir / CONFIG_NAME})")
    return render_config(values)


def is_ours(volid: str) -> bool:
    return volid.rsplit("/", 1)[-1] == SCRIPT_NAME


def plan_install(opts: InstallOptions, state: NodeState, script: bytes) -> list[Step]:
    steps: list[Step] = []
    target = state.snippets_dir / SCRIPT_NAME
    if state.script_bytes != script or (state.script_mode or 0) & 0o777 != 0o755:
        steps.append(Step("write-file", f"copy the hookscript to {target} (mode 0755)", target, script,
                          0o755))
    conf_path = opts.config_dir / CONFIG_NAME
    conf = wanted_config(opts, state.config_text)
    if conf != state.config_text:
        steps.append(Step("write-file", f"write {conf_path} (mode 0600)", conf_path, conf.encode(),
                          SECRET_MODE, before=_encoded(state.config_text), diff=True))
    steps += _secret_mode_steps(state, conf_path, conf != state.config_text)
    chain = parse_chain(state.chain_text)
    kept = _merge_chain(opts, chain, parse_chain(state.linked_chain_text))
    sets: list[Step] = []
    for vmid in sorted(state.hookscripts, key=int):
        current = state.hookscripts[vmid]
        if current == opts.volid:
            continue
        if current and not is_ours(current):
            path = state.previous_paths.get(current)
            if not path:
                raise InstallError(f"VM {vmid} has hookscript {current}, whose file `pvesm path` cannot "
                                   "find; fix or remove that hookscript, then run install again")
            chain[vmid] = ChainEntry(vmid, path, current)
            sets.append(Step("set-hookscript", f"VM {vmid}: set hookscript {opts.volid} "
                             f"(runs its previous hookscript {current} first)", vmid=vmid, volid=opts.volid))
        else:
            sets.append(Step("set-hookscript", f"VM {vmid}: set hookscript {opts.volid}",
                             vmid=vmid, volid=opts.volid))
    chain_text = render_chain(chain)
    if chain and chain_text != state.chain_text:
        steps.append(Step("write-file", f"record previous hookscripts in {opts.chain_path}",
                          opts.chain_path, chain_text.encode(), None, before=_encoded(state.chain_text),
                          diff=True))
    steps += _chain_link_steps(opts, state, kept)  # always: VMs of other nodes may migrate here
    return steps + sets


def _encoded(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _merge_chain(opts: InstallOptions, chain: dict[str, ChainEntry],
                 linked: Mapping[str, ChainEntry]) -> list[str]:
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
                "(nothing was changed)")
        if have is None:
            chain[vmid] = entry
            merged.append(vmid)
    return merged


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
        steps.append(Step("fix-mode", f"{path}: mode {mode & 0o777:04o} -> {SECRET_MODE:04o}, owner "
                          f"{_user(me)}{what}", path, mode=SECRET_MODE))
    return steps


def cluster_fs_notes(state: NodeState) -> list[str]:
    return [f"warning: {path} is on the cluster file system ({PVE_CLUSTER_FS}), where its mode cannot be "
            "changed and the www-data group may read it; keep the token in /etc/migration-guard/token "
            "(mode 0600) instead" for path in state.secrets if path.is_relative_to(PVE_CLUSTER_FS)]


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _chain_link_steps(opts: InstallOptions, state: NodeState, merged: Sequence[str]) -> list[Step]:
    link = opts.config_dir / CHAIN_NAME
    if opts.chain_path == link or state.chain_link == str(opts.chain_path):
        return []
    what = f" (its entries for VM {', '.join(merged)} merged into {opts.chain_path})" if merged else ""
    return [Step("symlink", f"link {link} -> {opts.chain_path}{what}", link, str(opts.chain_path).encode())]


def plan_uninstall(opts: InstallOptions, state: NodeState) -> list[Step]:
    chain = parse_chain(state.chain_text)
    steps: list[Step] = []
    for vmid in sorted(state.hookscripts, key=int):
        current = state.hookscripts[vmid]
        entry = chain.pop(vmid, None)
        if not is_ours(current):
            continue  # not ours (any more): leave it alone, forget the chain entry
        if entry and entry.volid:
            steps.append(Step("set-hookscript", f"VM {vmid}: restore previous hookscript {entry.volid}",
                              vmid=vmid, volid=entry.volid))
        else:
            steps.append(Step("delete-hookscript", f"VM {vmid}: remove hookscript {current}", vmid=vmid))
    if chain != parse_chain(state.chain_text):
        steps.append(Step("write-file", f"update {opts.chain_path} (VMs of this node removed)",
                          opts.chain_path, render_chain(chain).encode(), None))
    return steps


# --- I/O ------------------------------------------------------------------------------------------

class Pve:
    """Proxmox's CLIs on this node. Errors become InstallError with the command's own message."""

    def __init__(self, env: Mapping[str, str] | None = None, timeout: float = 60.0) -> None:
        self.env = dict(env) if env is not None else None
        self.timeout = timeout

    def run(self, *argv: str) -> str:
        tool = shutil.which(argv[0], path=(self.env or os.environ).get("PATH"))
        if tool is None:
            raise InstallError(f"`{argv[0]}` not found: run the installer on a Proxmox VE node")
        try:
            proc = subprocess.run([tool, *argv[1:]], capture_output=True, text=True, env=self.env,
                                  timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise InstallError(f"`{' '.join(argv)}` did not finish within {self.timeout:.0f} s") from None
        except OSError as exc:
            raise InstallError(f"cannot run `{' '.join(argv)}`: {exc.strerror or exc}") from None
        if proc.returncode != 0:
            why = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            raise InstallError(f"`{' '.join(argv)}` failed: {why[-1] if why else f'exit {proc.returncode}'}")
        return proc.stdout

    def vmids(self) -> list[str]:
        return parse_qm_list(self.run("qm", "list"))

    def hookscript(self, vmid: str) -> str:
        return parse_kv(self.run("qm", "config", vmid), ":").get("hookscript", "")

    def snippet_storages(self) -> dict[str, str]:
        return parse_pvesm_status(self.run("pvesm", "status", "--content", "snippets"))

    def path(self, volid: str) -> str:
        return self.run("pvesm", "path", volid).strip()

    def set_hookscript(self, vmid: str, volid: str) -> None:
        self.run("qm", "set", vmid, "--hookscript", volid)

    def delete_hookscript(self, vmid: str) -> None:
        self.run("qm", "set", vmid, "--delete", "hookscript")


def check_root(env: Mapping[str, str] | None = None) -> None:
    if (env if env is not None else os.environ).get(SKIP_ROOT_ENV) == "1":
        return
    if os.geteuid() != 0:
        raise InstallError("run this as root on a Proxmox VE node: only root@pam may set a VM's "
                           "hookscript (qm set VMID --hookscript ...)")


def check_options(opts: InstallOptions) -> None:
    if opts.mode and opts.mode not in ("enforce", "warn", "off"):
        raise ConfigError(f"--mode {opts.mode!r}: use enforce, warn or off")
    if opts.fail and opts.fail not in ("open", "closed"):
        raise ConfigError(f"--fail {opts.fail!r}: use open or closed")
    if opts.url and not re.match(r"^https?://[^/\s@]+", opts.url):
        raise ConfigError(f"--url {opts.url!r}: expected http(s)://host[:port]")
    if opts.timeout:
        try:
            if not 0 < float(opts.timeout) <= 120:
                raise ValueError
        except ValueError:
            raise ConfigError(f"--timeout {opts.timeout!r}: seconds between 0 and 120") from None
    for option, value in (("--chain-file", opts.chain_file), ("--token-file", opts.token_file),
                          ("--ca-file", opts.ca_file)):
        if value is not None and not Path(value).is_absolute():
            raise ConfigError(f"{option} {value}: give an absolute path (e.g. {Path(value).absolute()}): "
                              "the hook runs with another working directory, where a relative path points "
                              "nowhere")
    if not re.match(r"^[A-Za-z][A-Za-z0-9_.-]*$", opts.storage):
        raise ConfigError(f"--storage {opts.storage!r} is not a Proxmox storage name")
    for vmid in opts.attach or ():
        if vmid != "all" and not _VMID.match(vmid):
            raise ConfigError(f"--attach {vmid!r}: give `all` or VMIDs (100-999999999)")
    if opts.attach and "all" in opts.attach and len(opts.attach) > 1:
        raise ConfigError("--attach: give either `all` or VMIDs, not both")


def check_token_file(path: str | None) -> None:
    if not path:
        return
    try:
        os.stat(path)
    except OSError as exc:
        raise ConfigError(f"--token-file {path}: {exc.strerror or exc}") from None


def _read(path: Path) -> tuple[bytes | None, int | None]:
    try:
        return path.read_bytes(), path.stat().st_mode
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise InstallError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_node(opts: InstallOptions, pve: Pve, vmids: Iterable[str]) -> NodeState:
    storages = pve.snippet_storages()
    if opts.storage not in storages:
        raise InstallError(
            f"storage {opts.storage!r} does not allow snippets: add `snippets` to its content types "
            f"(Datacenter > Storage > {opts.storage} > Content, or `pvesm set {opts.storage} --content "
            "<its current types>,snippets`), or pick one with --storage "
            f"({', '.join(sorted(storages)) or 'none allows snippets yet'})")
    if storages[opts.storage] != "active":
        raise InstallError(f"storage {opts.storage!r} is {storages[opts.storage]} on this node")
    snippets = opts.snippets_dir or Path(pve.path(opts.volid)).parent
    script, mode = _read(snippets / SCRIPT_NAME)
    conf, _ = _read(opts.config_dir / CONFIG_NAME)
    chain, _ = _read(opts.chain_path)
    link = opts.config_dir / CHAIN_NAME
    linked = None
    if link != opts.chain_path and (link.is_symlink() or link.exists()):
        target = _link_target(link)
        if target is None or target != opts.chain_path:  # a file of its own, or a link elsewhere
            linked, _ = _read(link)
    conf_text = conf.decode("utf-8", "replace") if conf is not None else None
    token_path = opts.token_file or parse_kv(conf_text or "").get("token_file")
    secrets = {}
    for path in (opts.config_dir / CONFIG_NAME, Path(token_path) if token_path else None):
        if path is not None and path.is_absolute():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise InstallError(f"cannot read {path}: {exc.strerror or exc}") from None
            secrets[path] = (st.st_mode, st.st_uid)
    hooks = {vmid: pve.hookscript(vmid) for vmid in vmids}
    previous = {}
    for volid in set(hooks.values()):
        if volid and not is_ours(volid) and volid != opts.volid:
            with contextlib.suppress(InstallError):  # plan_install says what to do
                previous[volid] = pve.path(volid)
    return NodeState(
        snippets_dir=snippets, script_bytes=script, script_mode=mode,
        config_text=conf_text,
        chain_text=chain.decode("utf-8", "replace") if chain is not None else None,
        chain_link=os.readlink(link) if link.is_symlink() else None,
        hookscripts=hooks, previous_paths=previous,
        linked_chain_text=linked.decode("utf-8", "replace") if linked is not None else None,
        secrets=secrets,
    )


def _link_target(link: Path) -> Path | None:
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
    target = _link_target(link)
    if target is not None:
        return replace(opts, chain_file=target)
    if opts.config_dir == DEFAULT_CONFIG_DIR and not link.exists() and PVE_CLUSTER_MARKER.exists():
        return replace(opts, chain_file=PVE_CLUSTER_CHAIN)
    return opts


def attach_targets(opts: InstallOptions, pve: Pve) -> list[str]:
    if not opts.attach:
        return []
    local = pve.vmids()
    if opts.attach == ("all",):
        return local
    missing = [v for v in opts.attach if v not in local]
    if missing:
        raise InstallError(f"VM {', '.join(missing)} is not on this node (qm list); run the installer "
                           "on the node that holds it")
    return list(opts.attach)


def _write(path: Path, content: bytes, mode: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(content)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InstallError(f"cannot write {path}: {exc.strerror or exc}") from None


def _check_nothing_lost(link: Path, target: Path) -> None:
    """Before ``link`` is replaced by a link to ``target``: every chain entry it holds is in target
    (the plan merged them; this catches a change made since)."""
    if not (link.is_symlink() or link.exists()):
        return
    held, _ = _read(link)
    now, _ = _read(target)
    missing = set(parse_chain(held.decode("utf-8", "replace") if held else "").items()) - set(
        parse_chain(now.decode("utf-8", "replace") if now else "").items())
    if missing:
        raise InstallError(f"{link} holds entries missing from {target} (VM "
                           f"{', '.join(sorted(v for v, _ in missing))}): it changed during the install; "
                           "run install again")


def diff_lines(step: Step) -> list[str]:
    """A write-file step's change as a unified diff; values of ``token`` lines hidden."""
    if step.kind != "write-file" or not step.diff or step.path is None:
        return []
    old = "" if step.before is None else step.before.decode("utf-8", "replace")
    new = step.content.decode("utf-8", "replace")
    name = str(step.path)
    return [_hide_token(line) for line in difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True),
        f"{name} (missing)" if step.before is None else name, f"{name} (new)")]


def _hide_token(line: str) -> str:
    key, sep, _ = line[1:].partition("=")
    if sep and line[:1] in " +-" and key.strip().lower() == "token":
        return f"{line[0]}{key.rstrip()} = ***\n"
    return line


def apply(steps: Sequence[Step], pve: Pve) -> None:
    for step in steps:
        if step.kind == "write-file" and step.path is not None:
            _write(step.path, step.content, step.mode)
        elif step.kind == "symlink" and step.path is not None:
            _check_nothing_lost(step.path, Path(step.content.decode()))
            try:
                if step.path.is_symlink() or step.path.exists():
                    step.path.unlink()
                step.path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(step.content.decode(), step.path)
            except OSError as exc:
                raise InstallError(f"cannot link {step.path} -> {step.content.decode()}: "
                                   f"{exc.strerror or exc}") from None
        elif step.kind == "fix-mode" and step.path is not None:
            try:
                os.chown(step.path, os.geteuid(), os.getegid())
                os.chmod(step.path, step.mode if step.mode is not None else SECRET_MODE)
            except OSError as exc:
                raise InstallError(f"cannot fix the mode of {step.path} ({exc.strerror or exc}): it holds "
                                   f"the service token; run: chown root:root {step.path}; "
                                   f"chmod 600 {step.path}") from None
        elif step.kind == "set-hookscript":
            pve.set_hookscript(step.vmid, step.volid)
        elif step.kind == "delete-hookscript":
            pve.delete_hookscript(step.vmid)
        else:  # pragma: no cover - a programming error
            raise AssertionError(step.kind)


# --- the three commands ---------------------------------------------------------------------------

@dataclass(slots=True)
class Report:
    steps: list[Step]
    notes: list[str]
    applied: bool


def install(opts: InstallOptions, pve: Pve | None = None, env: Mapping[str, str] | None = None) -> Report:
    check_options(opts)
    check_root(env)
    opts = resolve_chain_file(opts)
    pve = pve or Pve()
    check_token_file(opts.token_file)
    notes: list[str] = []
    state = read_node(opts, pve, attach_targets(opts, pve))
    steps = plan_install(opts, state, script_source())
    notes += cluster_fs_notes(state)
    if any(s.kind == "set-hookscript" for s in steps):
        notes.append(MISSING_ON_NODE_NOTE)
    if not opts.dry_run:
        apply(steps, pve)
    return Report(steps, notes, not opts.dry_run)


def uninstall(opts: InstallOptions, pve: Pve | None = None, env: Mapping[str, str] | None = None) -> Report:
    check_options(opts)
    check_root(env)
    opts = resolve_chain_file(opts)
    pve = pve or Pve()
    vmids = pve.vmids()
    state = read_node(opts, pve, vmids)
    steps = plan_uninstall(opts, state)
    notes = [f"kept {state.snippets_dir / SCRIPT_NAME} and {opts.config_dir / CONFIG_NAME}: other nodes' "
             "VMs may still use them; remove them by hand once every node is uninstalled"]
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
        script_current=state.script_bytes == script_source(),
        config=opts.config_dir / CONFIG_NAME,
        config_present=state.config_text is not None,
        attached=tuple(v for v, h in state.hookscripts.items() if is_ours(h)),
        chain_file=opts.chain_path,
        chained=tuple(chain[v] for v in sorted(chain, key=int)),
    )
