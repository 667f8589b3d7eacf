"""The installer's hands on the node: Proxmox's CLIs (``qm``, ``pvesm``: only ``root@pam`` may set a
VM's ``hookscript`` option), reading what is there (``read_node``) and applying a plan in order:
script, config, chain map, then each VM's hookscript."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path

from migration_guard.cli.hook_chain import link_target, parse_chain
from migration_guard.cli.hook_options import (
    CHAIN_NAME,
    CONFIG_NAME,
    SCRIPT_NAME,
    SECRET_MODE,
    InstallError,
    InstallOptions,
    NodeState,
    Step,
    is_ours,
    parse_kv,
)


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


def module_sources() -> dict[str, bytes]:
    """The hook's modules, installed beside the launcher ``SCRIPT_NAME`` (which imports them)."""
    folder = resources.files("migration_guard_hook")
    return {
        f.name: f.read_bytes()
        for f in folder.iterdir()
        if f.name.startswith("guard_") and f.name.endswith(".py")
    }


class Pve:
    """Proxmox's CLIs on this node. Errors become InstallError with the command's own message."""

    def __init__(self, env: Mapping[str, str] | None = None, timeout: float = 60.0) -> None:
        self.env = dict(env) if env is not None else None
        self.timeout = timeout

    def run(self, *argv: str) -> str:
        tool = shutil.which(argv[0], path=(self.env or {}).get("PATH"))  # None: this process's PATH
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
            f"({', '.join(sorted(storages)) or 'none allows snippets yet'})"
        )
    if storages[opts.storage] != "active":
        raise InstallError(f"storage {opts.storage!r} is {storages[opts.storage]} on this node")
    snippets = opts.snippets_dir or Path(pve.path(opts.volid)).parent
    script, mode = _read(snippets / SCRIPT_NAME)
    conf, _ = _read(opts.config_dir / CONFIG_NAME)
    chain, _ = _read(opts.chain_path)
    link = opts.config_dir / CHAIN_NAME
    linked = None
    if link != opts.chain_path and (link.is_symlink() or link.exists()):
        target = link_target(link)
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
        snippets_dir=snippets,
        script_bytes=script,
        script_mode=mode,
        config_text=conf_text,
        chain_text=chain.decode("utf-8", "replace") if chain is not None else None,
        chain_link=os.readlink(link) if link.is_symlink() else None,
        hookscripts=hooks,
        previous_paths=previous,
        linked_chain_text=linked.decode("utf-8", "replace") if linked is not None else None,
        secrets=secrets,
    )


def attach_targets(opts: InstallOptions, pve: Pve) -> list[str]:
    if not opts.attach:
        return []
    local = pve.vmids()
    if opts.attach == ("all",):
        return local
    missing = [v for v in opts.attach if v not in local]
    if missing:
        raise InstallError(
            f"VM {', '.join(missing)} is not on this node (qm list); run the installer "
            "on the node that holds it"
        )
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
        parse_chain(now.decode("utf-8", "replace") if now else "").items()
    )
    if missing:
        raise InstallError(
            f"{link} holds entries missing from {target} (VM "
            f"{', '.join(sorted(v for v, _ in missing))}): it changed during the install; "
            "run install again"
        )


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
                raise InstallError(
                    f"cannot link {step.path} -> {step.content.decode()}: {exc.strerror or exc}"
                ) from None
        elif step.kind == "fix-mode" and step.path is not None:
            try:
                os.chown(step.path, os.geteuid(), os.getegid())
                os.chmod(step.path, step.mode if step.mode is not None else SECRET_MODE)
            except OSError as exc:
                raise InstallError(
                    f"cannot fix the mode of {step.path} ({exc.strerror or exc}): it holds "
                    f"the service token; run: chown root:root {step.path}; "
                    f"chmod 600 {step.path}"
                ) from None
        elif step.kind == "set-hookscript":
            pve.set_hookscript(step.vmid, step.volid)
        elif step.kind == "delete-hookscript":
            pve.delete_hookscript(step.vmid)
        else:  # pragma: no cover - a programming error
            raise AssertionError(step.kind)
