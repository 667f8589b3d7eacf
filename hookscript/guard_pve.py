"""The node installer's hands (standard library only): Proxmox's CLIs (``qm``, ``pvesm``, ``pvecm``:
only ``root@pam`` may set a VM's ``hookscript`` option), reading what is there (``read_node``), the
cluster-wide lock that guards the shared chain map, and applying a plan in order: modules, script,
config, chain map, then each VM's hookscript.

The cluster-wide lock is pmxcfs's own (pve-cluster ``PVE::Cluster::cfs_lock``): ``mkdir`` of
``/etc/pve/priv/lock/<id>`` succeeds on exactly one node of the cluster; a node that finds it taken
asks pmxcfs to drop an expired one (``utime(0, 0)``; pmxcfs expires a lock after 120 s) and tries
again once a second, up to a timeout (10 s, as ``cfs_lock``); ``rmdir`` releases it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from guard_plan import (
    CHAIN_NAME,
    CONFIG_NAME,
    SCRIPT_NAME,
    SECRET_MODE,
    SKIP_TAG,
    InstallError,
    InstallOptions,
    NodeState,
    Step,
    is_ours,
    parse_chain,
    parse_kv,
    rebase_chain,
)

#: the lock id below /etc/pve/priv/lock (cfs_lock_file names its locks "file-<path with . and / as _>")
CHAIN_LOCK = "file-migration-guard_chain_conf"
LOCK_TIMEOUT_S = 10.0


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


def parse_pvecm_nodes(text: str) -> list[str]:
    """Node names from `pvecm nodes` (pve-cluster PVE/CLI/pvecm.pm: a header, then `Nodeid Votes Name`
    rows, `(local)` after this node's name)."""
    names = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit() and parts[1].isdigit():
            names.append(parts[2])
    return names


def kit_source(folder: Path | None = None) -> dict[str, bytes]:
    """The files a node gets: the launcher and the modules beside it (this file's folder)."""
    base = folder or Path(__file__).resolve().parent
    names = [SCRIPT_NAME, *sorted(p.name for p in base.glob("guard_*.py"))]
    try:
        return {name: (base / name).read_bytes() for name in names}
    except OSError as exc:
        raise InstallError(f"the node kit in {base} is incomplete: {exc.strerror or exc}") from None


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
            proc = subprocess.run(
                [tool, *argv[1:]], capture_output=True, text=True, env=self.env, timeout=self.timeout
            )
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

    def config(self, vmid: str) -> dict[str, str]:
        return parse_kv(self.run("qm", "config", vmid), ":")

    def hookscript(self, vmid: str) -> str:
        return self.config(vmid).get("hookscript", "")

    def snippet_storages(self) -> dict[str, str]:
        return parse_pvesm_status(self.run("pvesm", "status", "--content", "snippets"))

    def path(self, volid: str) -> str:
        return self.run("pvesm", "path", volid).strip()

    def set_hookscript(self, vmid: str, volid: str) -> None:
        self.run("qm", "set", vmid, "--hookscript", volid)

    def delete_hookscript(self, vmid: str) -> None:
        self.run("qm", "set", vmid, "--delete", "hookscript")

    def systemctl(self, *args: str) -> None:
        self.run("systemctl", *args)


def skipped(config: Mapping[str, str]) -> str | None:
    """Why `attach` leaves a VM alone: a template, or the skip tag (Proxmox stores tags `;`-separated)."""
    if config.get("template", "0") == "1":
        return "a template"
    tags = config.get("tags", "").replace(",", ";").replace(" ", ";").split(";")
    return f"tagged {SKIP_TAG}" if SKIP_TAG in tags else None


def attach_targets(opts: InstallOptions, pve: Pve) -> tuple[list[str], list[str]]:
    """-> (VMIDs to attach, lines naming the VMs left alone)."""
    if not opts.attach:
        return [], []
    local = pve.vmids()
    if opts.attach != ("all",):
        missing = [v for v in opts.attach if v not in local]
        if missing:
            raise InstallError(
                f"VM {', '.join(missing)} is not on this node (qm list); "
                "run the installer on the node that holds it"
            )
        return list(opts.attach), []
    chosen, left = [], []
    for vmid in local:
        why = skipped(pve.config(vmid))
        if why:
            left.append(f"VM {vmid} left alone: {why}")
        else:
            chosen.append(vmid)
    return chosen, left


def resolve_chain_file(opts: InstallOptions) -> InstallOptions:
    """Where the chain map lives when --chain-file is not given: an earlier install's link
    CONFIG_DIR/chain.conf -> FILE keeps FILE; else, on a cluster node with the default config dir,
    the cluster file system (shared by every node, so a VM's previous hookscript still runs after it
    migrates); else CONFIG_DIR/chain.conf."""
    if opts.chain_file is not None:
        return opts
    link = opts.conf_dir / CHAIN_NAME
    target = link_target(link)
    if target is not None:
        return replace(opts, chain_file=target)
    if opts.config_dir is None and not link.exists() and (opts.cluster_fs / ".members").exists():
        return replace(opts, chain_file=opts.cluster_fs / "migration-guard" / CHAIN_NAME)
    return opts


def link_target(link: Path) -> Path | None:
    if not link.is_symlink():
        return None
    return link.parent / os.readlink(link)


def _read(path: Path) -> tuple[bytes | None, int | None]:
    try:
        return path.read_bytes(), path.stat().st_mode
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise InstallError(f"cannot read {path}: {exc.strerror or exc}") from None


def _text(data: bytes | None) -> str | None:
    return data.decode("utf-8", "replace") if data is not None else None


def snippets_dir(opts: InstallOptions, pve: Pve) -> Path:
    storages = pve.snippet_storages()
    if opts.storage not in storages:
        raise InstallError(
            f"storage {opts.storage!r} does not allow snippets: add `snippets` to its content types "
            f"(Datacenter > Storage > {opts.storage} > Content, or `pvesm set {opts.storage} --content "
            "<its current types>,snippets`), or pick one with --storage "
            f"({', '.join(sorted(storages)) or 'none allows snippets yet'})"
        )
    if storages[opts.storage] != "active":
        raise InstallError(f"storage {opts.storage!r} is {storages[opts.storage]} on this node")
    return opts.snippets_dir or Path(pve.path(opts.volid)).parent


def read_node(opts: InstallOptions, pve: Pve, vmids: Iterable[str], units: Iterable[str] = ()) -> NodeState:
    snippets = snippets_dir(opts, pve)
    kit = {}
    for name in kit_source():
        data, mode = _read(snippets / name)
        if data is not None:
            kit[name] = (data, mode or 0)
    conf, _ = _read(opts.conf_dir / CONFIG_NAME)
    chain, _ = _read(opts.chain_path)
    link = opts.conf_dir / CHAIN_NAME
    linked = None
    if link != opts.chain_path and (link.is_symlink() or link.exists()):
        target = link_target(link)
        if target is None or target != opts.chain_path:  # a file of its own, or a link elsewhere
            linked, _ = _read(link)
    conf_text = _text(conf)
    token_path = opts.token_file or parse_kv(conf_text or "").get("token_file")
    secrets = {}
    for path in (opts.conf_dir / CONFIG_NAME, Path(token_path) if token_path else None):
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
    found_units = {}
    for name in units:
        data, _ = _read(opts.units_dir / name)
        if data is not None:
            found_units[name] = data.decode("utf-8", "replace")
    return NodeState(
        snippets_dir=snippets,
        kit_files=kit,
        config_text=conf_text,
        chain_text=_text(chain),
        chain_link=os.readlink(link) if link.is_symlink() else None,
        hookscripts=hooks,
        previous_paths=previous,
        linked_chain_text=_text(linked),
        secrets=secrets,
        units=found_units,
    )


@contextlib.contextmanager
def cluster_lock(opts: InstallOptions, timeout: float = LOCK_TIMEOUT_S, poll: float = 1.0) -> Iterator[None]:
    """pmxcfs's cluster-wide lock while the chain map on the cluster file system is rewritten (a
    chain map elsewhere is one node's own: no lock)."""
    if not opts.chain_path.is_relative_to(opts.cluster_fs):
        yield
        return
    lockdir = opts.cluster_fs / "priv" / "lock"
    with contextlib.suppress(OSError):
        lockdir.mkdir(parents=True)
    if not lockdir.is_dir():
        raise InstallError(f"{lockdir} is missing: the cluster file system (pmxcfs) is not online")
    lock = lockdir / CHAIN_LOCK
    deadline = time.monotonic() + timeout
    while True:
        try:
            lock.mkdir()
            break
        except FileExistsError:
            if time.monotonic() >= deadline:
                raise InstallError(
                    f"the cluster-wide lock {lock} stayed taken for {timeout:.0f} s (another node is "
                    "installing, or pmxcfs has no quorum: `pvecm status`); run this again"
                ) from None
            with contextlib.suppress(OSError):
                os.utime(lock, (0, 0))  # asks pmxcfs to drop the lock if it expired
            time.sleep(poll)
        except OSError as exc:
            raise InstallError(f"cannot take the cluster-wide lock {lock}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.rmdir()


def write_file(path: Path, content: bytes, mode: int | None) -> None:
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


def update_chain(opts: InstallOptions, step: Step) -> None:
    """This run's change of the chain map, applied under the cluster-wide lock to what is there NOW
    (another node may have written its VMs' entries since this run read it)."""
    assert step.path is not None
    with cluster_lock(opts):
        current, _ = _read(step.path)
        text = rebase_chain(_text(current), _text(step.before), step.content.decode())
        write_file(step.path, text.encode(), step.mode)


def _check_nothing_lost(link: Path, target: Path) -> None:
    """Before ``link`` is replaced by a link to ``target``: every chain entry it holds is in target."""
    if not (link.is_symlink() or link.exists()):
        return
    held, _ = _read(link)
    now, _ = _read(target)
    missing = set(parse_chain(_text(held)).items()) - set(parse_chain(_text(now)).items())
    if missing:
        raise InstallError(
            f"{link} holds entries missing from {target} (VM {', '.join(sorted(v for v, _ in missing))}): "
            "it changed during the install; run install again"
        )


def _symlink(step: Step) -> None:
    assert step.path is not None
    _check_nothing_lost(step.path, Path(step.content.decode()))
    try:
        if step.path.is_symlink() or step.path.exists():
            step.path.unlink()
        step.path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(step.content.decode(), step.path)
    except OSError as exc:
        raise InstallError(
            f"cannot link {step.path} -> {step.content.decode()}: {exc.strerror or exc}"
        ) from None


def _fix_mode(step: Step) -> None:
    assert step.path is not None
    try:
        os.chown(step.path, os.geteuid(), os.getegid())
        os.chmod(step.path, step.mode if step.mode is not None else SECRET_MODE)
    except OSError as exc:
        raise InstallError(
            f"cannot fix the mode of {step.path} ({exc.strerror or exc}): it holds the service token; "
            f"run: chown root:root {step.path}; chmod 600 {step.path}"
        ) from None


def apply(opts: InstallOptions, steps: Sequence[Step], pve: Pve) -> None:
    for step in steps:
        if step.kind in ("write-file", "write-unit") and step.path is not None:
            write_file(step.path, step.content, step.mode)
        elif step.kind == "update-chain":
            update_chain(opts, step)
        elif step.kind == "symlink":
            _symlink(step)
        elif step.kind == "fix-mode":
            _fix_mode(step)
        elif step.kind == "set-hookscript":
            pve.set_hookscript(step.vmid, step.volid)
        elif step.kind == "delete-hookscript":
            pve.delete_hookscript(step.vmid)
        elif step.kind == "remove-unit" and step.path is not None:
            step.path.unlink(missing_ok=True)
        elif step.kind == "systemctl":
            pve.systemctl(*step.content.decode().split())
        else:  # pragma: no cover - a programming error
            raise AssertionError(step.kind)
