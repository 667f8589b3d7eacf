"""The guarded remote (cross-cluster) move: ``qm remote-migrate`` after the service said yes, with
the VM's hookscript line taken off for the move and never lost.

Why the hookscript line must go (qemu-server ``API2/Qemu.pm``): the target cluster applies the
incoming config through the migration tunnel's ``config`` command as the remote endpoint's API
token, and ``check_vm_modify_config_perm`` lets only ``root@pam`` itself set ``hookscript``; an API
token (which ``qm remote-migrate`` requires) is refused with "only root can set 'hookscript'
config" before any hook runs. So the move is: delete the line on the source
(``qm set VMID --delete hookscript``, as root), ``qm remote-migrate``, then put the line back on the
source (at once after a failure; after a success when the source VM was kept) and tell the
operator the exact command to re-attach it on the target, recorded in the pending-reattach file.

Before anything is touched, the refusals ``qm remote-migrate`` itself would give after the line
was already gone (qemu-server ``API2/Qemu.pm`` ``remote_migrate_vm``): a locked VM, a VM configured
for HA (``/etc/pve/ha/resources.cfg``), a replicated VM (``/etc/pve/replication.cfg``).

``qm`` maps its positional arguments in order to ``vmid``, ``target-vmid``, ``target-endpoint``
(qemu-server ``PVE/CLI/qm.pm``; pve-common ``PVE::JSONSchema::get_options``): an endpoint given
without the target VMID before it is taken for the target VMID. So the command is always built in
that order, with the target VMID (default: the same VMID) written out.

Pure planning (``parse_qm_args``, ``plan_move``, ``refusal``) and a runner over the ``qm`` command
(``Qm``, ``execute``): the CLI in ``shared/migration_guard/cli/remote.py`` wires them to the service.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from migration_guard.client import VMID
from migration_guard.errors import GuardError, InputError

PENDING_FILE = "/etc/migration-guard/pending-reattach"
#: the cluster file system, where HA resources and replication jobs are configured
PVE_ETC = Path("/etc/pve")

#: qm remote-migrate options that take a value (qemu-server API2/Qemu.pm remote_migrate_vm)
_VALUE_OPTS = {"target-bridge", "target-storage", "bwlimit", "target-vmid", "target-endpoint"}
#: its boolean options (``--online``, ``--online 1``, ``--online=0``)
_BOOL_OPTS = {"online", "delete"}
_BOOL_VALUES = {"0": False, "1": True, "true": True, "false": False, "yes": True, "no": False}


class QmError(GuardError):
    """A ``qm`` command failed; the message names the command and its output."""

    code = "qm-failed"


@dataclass(frozen=True, slots=True)
class QmArgs:
    """The operator's ``qm remote-migrate`` arguments after VMID: the target VMID and endpoint, and
    the options (passed on unchanged, in the order given)."""

    options: tuple[str, ...]
    target_vmid: int | None
    endpoint: str
    delete: bool
    online: bool


def parse_qm_args(args: Sequence[str]) -> QmArgs:
    """Read ``[TARGET-VMID] TARGET-ENDPOINT --target-bridge B --target-storage S [--online]
    [--delete] [--bwlimit N]`` (the syntax of ``qm remote-migrate`` after VMID). InputError
    when something qm would refuse after the hookscript line was already removed."""
    positional: list[str] = []
    options: dict[str, str] = {}
    passed: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        tok = items[i]
        start = i
        i += 1
        if not tok.startswith("-") or tok == "-":
            positional.append(tok)
            continue
        name, eq, value = tok.lstrip("-").partition("=")
        if name in _BOOL_OPTS:
            if not eq and i < len(items) and items[i].lower() in _BOOL_VALUES:
                value, i = items[i], i + 1
            options[name] = value if (eq or value) else "1"
            if options[name].lower() not in _BOOL_VALUES:
                raise InputError(f"--{name} takes 0 or 1, not {options[name]!r}")
        elif name in _VALUE_OPTS:
            if not eq:
                if i >= len(items):
                    raise InputError(f"--{name} needs a value")
                value, i = items[i], i + 1
            options[name] = value
        else:
            raise InputError(
                f"qm remote-migrate has no option --{name} (it takes --target-bridge, --target-storage, "
                "--online, --delete, --bwlimit)"
            )
        if name not in ("target-vmid", "target-endpoint"):
            passed.extend(items[start:i])
    endpoint = options.get("target-endpoint", "")
    target_vmid_text = options.get("target-vmid", "")
    if len(positional) == 2 and not endpoint and not target_vmid_text:
        target_vmid_text, endpoint = positional
    elif len(positional) == 1 and not endpoint:
        endpoint = positional[0]
    elif len(positional) == 1 and endpoint and not target_vmid_text:
        target_vmid_text = positional[0]
    elif positional:
        raise InputError(
            "expected the arguments in qm's order, VMID [TARGET-VMID] TARGET-ENDPOINT, e.g. 101 9101 "
            "'apitoken=PVEAPIToken=root@pam!migrate=SECRET,host=pveb1.example.org,fingerprint=...'"
        )
    if "apitoken=" in target_vmid_text or "host=" in target_vmid_text:
        raise InputError(
            "the target endpoint came before the target VMID: give the arguments in qm's order, "
            "VMID [TARGET-VMID] TARGET-ENDPOINT"
        )
    if not endpoint:
        raise InputError(
            "the target endpoint is missing: 'apitoken=PVEAPIToken=USER@REALM!TOKEN=SECRET,host=HOST"
            "[,port=8006][,fingerprint=...]' (as for qm remote-migrate)"
        )
    if "host=" not in endpoint or "apitoken=" not in endpoint:
        raise InputError("the target endpoint needs apitoken=... and host=... (as for qm remote-migrate)")
    target_vmid = None
    if target_vmid_text:
        # Proxmox's pve-vmid format (pve-common PVE/JSONSchema.pm): no leading zero
        if not VMID.match(target_vmid_text):
            raise InputError(f"TARGET-VMID {target_vmid_text!r} is not a VM id (100 to 999999999)")
        target_vmid = int(target_vmid_text)
    for required in ("target-storage", "target-bridge"):
        if not options.get(required):
            raise InputError(
                f"--{required} is required by qm remote-migrate (e.g. --target-storage local-lvm "
                "--target-bridge vmbr0)"
            )
    return QmArgs(
        options=tuple(passed),
        target_vmid=target_vmid,
        endpoint=endpoint,
        delete=_BOOL_VALUES[options.get("delete", "0").lower()],
        online=_BOOL_VALUES[options.get("online", "0").lower()],
    )


def masked(argv: Sequence[str]) -> str:
    """A command line for the operator's eyes: the endpoint's API token secret hidden."""
    out = []
    for arg in argv:
        if "apitoken=" in arg:
            parts = []
            for part in arg.split(","):
                key, _, value = part.partition("=")
                if key.strip() == "apitoken":
                    head = value.rsplit("=", 1)[0] if value.count("=") >= 2 else "PVEAPIToken"
                    part = f"apitoken={head}=***"
                parts.append(part)
            arg = ",".join(parts)
        out.append(shlex.quote(arg))
    return " ".join(out)


def parse_qm_config(text: str) -> dict[str, str]:
    """``qm config`` output (``key: value`` lines) -> dict; only the current config, not snapshots."""
    config: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("["):
            break
        key, sep, value = line.partition(":")
        if sep and key.strip() and not key.startswith("#"):
            config[key.strip()] = value.strip()
    return config


def smbios_uuid(config: dict[str, str]) -> str:
    for part in config.get("smbios1", "").split(","):
        key, _, value = part.partition("=")
        if key.strip() == "uuid":
            return value.strip().lower()
    return ""


@dataclass(frozen=True, slots=True)
class MovePlan:
    vmid: int
    source_node: str
    source_cluster: str
    target_cluster: str
    target_node: str
    target_vmid: int
    #: the VM's hookscript volume (``local:snippets/migration-guard-hook``), "" when it has none
    hookscript: str
    #: the source VM stays (stopped) after the move: its hookscript line is put back there
    keep_source: bool
    qm: QmArgs

    def migrate_cmd(self) -> list[str]:
        """In qm's order, the target VMID always written out (see the module's docstring)."""
        return [
            "qm",
            "remote-migrate",
            str(self.vmid),
            str(self.target_vmid),
            self.qm.endpoint,
            *self.qm.options,
        ]

    def detach_cmd(self) -> list[str]:
        return ["qm", "set", str(self.vmid), "--delete", "hookscript"]

    def restore_cmd(self) -> list[str]:
        # --skiplock: after a move the kept source VM carries lock: migrate (root only, as we are)
        return ["qm", "set", str(self.vmid), "--hookscript", self.hookscript, "--skiplock", "1"]

    def reattach_cmd(self) -> str:
        """What the operator runs as root on the target node (root@pam, not an API token)."""
        return f"qm set {self.target_vmid} --hookscript {self.hookscript}"


def plan_move(
    vmid: int,
    config: dict[str, str],
    qm: QmArgs,
    *,
    source_node: str,
    source_cluster: str,
    target_cluster: str,
    target_node: str,
) -> MovePlan:
    if config.get("lock"):
        raise InputError(
            f"VM {vmid} is locked ({config['lock']}): qm remote-migrate would refuse it; "
            f"wait for the running task or clear it with qm unlock {vmid}"
        )
    return MovePlan(
        vmid=vmid,
        source_node=source_node,
        source_cluster=source_cluster,
        target_cluster=target_cluster,
        target_node=target_node,
        target_vmid=qm.target_vmid or vmid,
        hookscript=config.get("hookscript", ""),
        keep_source=not qm.delete,
        qm=qm,
    )


def refusal(vmid: int, etc: Path | None = None) -> str | None:
    """Why ``qm remote-migrate`` would refuse this VM after the hookscript line was already removed,
    with qm's own words and what to do; None when it would not. Reads the cluster file system as
    qemu-server ``API2/Qemu.pm`` ``remote_migrate_vm`` does: ``PVE::HA::Config::service_is_configured``
    (a section ``vm: VMID`` in ha/resources.cfg) and ``PVE::ReplicationConfig::check_for_existing_jobs``
    (any job ``TYPE: VMID-N`` in replication.cfg, enabled or not)."""
    etc = etc or PVE_ETC
    ha_file = etc / "ha" / "resources.cfg"
    if any(kind == "vm" and name == str(vmid) for kind, name in _sections(ha_file)):
        return (
            f"VM {vmid} is managed by HA (vm:{vmid} in {ha_file}); qm remote-migrate refuses it: "
            f"'cannot remote-migrate VM that is configured for HA'. Remove it from HA first "
            f"(ha-manager remove vm:{vmid}), move it, then add it to HA on the target cluster; "
            "nothing was changed"
        )
    repl_file = etc / "replication.cfg"
    jobs = [name for _, name in _sections(repl_file) if _job_guest(name) == vmid]
    if jobs:
        return (
            f"VM {vmid} is replicated (job {', '.join(jobs)} in {repl_file}); qm remote-migrate refuses it: "
            f"'cannot remote-migrate replicated VM'. Remove the job first ("
            + "; ".join(f"pvesr delete {job}" for job in jobs)
            + "); nothing was changed"
        )
    return None


def _job_guest(job: str) -> int | None:
    """The guest of a replication job id ``VMID-N`` (pve-guest-common ``PVE::ReplicationConfig``)."""
    guest, sep, number = job.partition("-")
    if sep and guest.isascii() and guest.isdigit() and number.isascii() and number.isdigit():
        return int(guest)
    return None


def _sections(path: Path) -> list[tuple[str, str]]:
    """The section headers ``type: name`` of a Proxmox section config file (pve-common
    ``PVE::SectionConfig``); a missing file has none."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise QmError(f"cannot read {path} ({exc.strerror or exc}); nothing was changed") from None
    out = []
    for line in text.splitlines():
        if not line or line[0].isspace() or line.startswith("#"):
            continue
        kind, sep, name = line.partition(":")
        if sep and kind.strip() and " " not in kind.strip() and len(name.split()) == 1:
            out.append((kind.strip().lower(), name.strip()))
    return out


def pending_line(plan: MovePlan, now: float) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return (
        f"{when} vmid={plan.vmid} source={plan.source_cluster}/{plan.source_node} "
        f"target={plan.target_cluster}/{plan.target_node} target_vmid={plan.target_vmid} "
        f"hookscript={plan.hookscript} run-on-{plan.target_node}-as-root: {plan.reattach_cmd()}\n"
    )


# --- the runner ---------------------------------------------------------------------------------


class Qm:
    """Runs ``qm`` (``path``: the command line's MIGRATION_GUARD_QM setting, else the first on
    PATH). Output of remote-migrate goes straight to the terminal; other commands are captured."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or "qm"

    def _run(self, args: Sequence[str], *, capture: bool = True) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.path, *args], capture_output=capture, text=True, check=False)
        except FileNotFoundError:
            raise QmError(
                f"{self.path} not found: run migration-guard remote-migrate on the source Proxmox VE node"
            ) from None
        except OSError as exc:
            raise QmError(f"cannot run {self.path}: {exc.strerror or exc}") from None

    def config(self, vmid: int) -> dict[str, str]:
        done = self._run(["config", str(vmid)])
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()
            raise QmError(f"qm config {vmid} failed: {why[-1] if why else f'exit code {done.returncode}'}")
        return parse_qm_config(done.stdout)

    def call(self, cmd: Sequence[str]) -> tuple[int, str]:
        """Run a planned ``qm ...`` command (cmd[0] == "qm"); (exit code, its last output line)."""
        done = self._run(cmd[1:])
        lines = (done.stderr or done.stdout or "").strip().splitlines()
        return done.returncode, lines[-1] if lines else ""

    def stream(self, cmd: Sequence[str]) -> int:
        return self._run(cmd[1:], capture=False).returncode


EXIT_MOVED, EXIT_MIGRATE_FAILED = 0, 4


def execute(
    plan: MovePlan,
    qm: Qm,
    say: Callable[[str], None],
    *,
    pending_file: str | Path = PENDING_FILE,
    clock: Callable[[], float] = time.time,
) -> int:
    """Detach the hookscript line, run qm remote-migrate, put the line back where it belongs.
    Returns 0 (moved) or 4 (qm remote-migrate failed; the source is as it was)."""
    if plan.hookscript:
        say(
            f"removing hookscript {plan.hookscript} from VM {plan.vmid} for the move: the target cluster "
            "lets only root@pam set it, and qm remote-migrate applies the config with an API token"
        )
        rc, why = qm.call(plan.detach_cmd())
        if rc != 0:
            raise QmError(
                f"could not remove the hookscript line of VM {plan.vmid} ({why or f'exit code {rc}'}); "
                "nothing was moved"
            )
    say("running: " + masked(plan.migrate_cmd()))
    rc = qm.stream(plan.migrate_cmd())
    if rc != 0:
        say(f"qm remote-migrate failed (exit code {rc}): VM {plan.vmid} stays on {plan.source_node}")
        if plan.hookscript:
            _restore(plan, qm, say, "after the failed move")
        return EXIT_MIGRATE_FAILED
    if not plan.hookscript:
        say(f"moved VM {plan.vmid} to {plan.target_cluster}/{plan.target_node} as VM {plan.target_vmid}")
        return EXIT_MOVED
    if plan.keep_source:
        _restore(plan, qm, say, "on the kept source VM")
    recorded = _record(plan, pending_file, clock())
    say(
        f"moved VM {plan.vmid} to {plan.target_cluster}/{plan.target_node} as VM {plan.target_vmid} "
        f"WITHOUT its hookscript. Re-attach it as root on {plan.target_node} "
        f"(the snippet must exist on the target cluster's nodes): {plan.reattach_cmd()}"
    )
    say(
        f"recorded in {pending_file}; delete that line once done"
        if recorded
        else f"could not record this in {pending_file}: note the command above"
    )
    return EXIT_MOVED


def _restore(plan: MovePlan, qm: Qm, say: Callable[[str], None], when: str) -> None:
    rc, why = qm.call(plan.restore_cmd())
    if rc == 0:
        say(f"restored hookscript {plan.hookscript} of VM {plan.vmid} {when}")
        return
    say(
        f"WARNING: could not restore hookscript {plan.hookscript} of VM {plan.vmid} {when} "
        f"({why or f'exit code {rc}'}); run as root on {plan.source_node}: "
        f"qm set {plan.vmid} --hookscript {plan.hookscript}"
    )


def _record(plan: MovePlan, path: str | Path, now: float) -> bool:
    try:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(pending_line(plan, now))
    except OSError:
        return False
    return True
