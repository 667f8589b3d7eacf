"""Can the target run the machine the VM runs (its QEMU machine version and qemu-server's
``+pveN`` revision)? Pure: facts in, reasons out."""

from __future__ import annotations

from migration_guard.engine.facts import NodeFacts, VmFacts
from migration_guard.engine.runnable import Reason


def _machine_version(machine: str) -> tuple[int, ...] | None:
    """``pc-q35-9.0+pve0`` / ``pc-i440fx-8.1`` -> (9, 0); None when the string names no version."""
    base = machine.split("+", 1)[0]
    tail = base.rsplit("-", 1)[-1]
    try:
        return tuple(int(p) for p in tail.split("."))
    except ValueError:
        return None


def _version(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in text.split("+")[0].split(".")[:2])
    except ValueError:
        return None


def _machine_problem(vm: VmFacts, target: NodeFacts) -> str:
    """Why ``target`` cannot run the machine the VM runs (``pc-q35-9.2+pve1``), "" when it can.
    Its ``capabilities/qemu/machines`` list (qemu-server ``PVE/API2/Qemu/Machine.pm``) holds the
    QEMU machine versions of pve-qemu-kvm and the ``+pveN`` revisions qemu-server knows
    (``$PVE_MACHINE_VERSION`` in ``PVE/QemuServer/Machine.pm``); Proxmox refuses a version newer
    than its QEMU and a revision its qemu-server does not know (``can_run_pve_machine_version``)."""
    running = vm.running_machine
    base, _, revision = running.partition("+")
    listed = set(target.machines)
    bases = {m.split("+", 1)[0] for m in listed}
    wanted = _machine_version(running)
    newest = max((v for v in (_machine_version(m) for m in listed) if v), default=None)
    if base not in bases:
        if wanted and newest and wanted[:2] > newest[:2]:
            qemu = f" (QEMU {target.qemu_version})" if target.qemu_version else ""
            return (
                f"VM {vm.vmid} runs machine {running}, newer than any {target.name}'s QEMU{qemu} "
                f"offers: update pve-qemu-kvm on {target.name} first"
            )
        return ""  # an older version the list leaves out: QEMU keeps old machine versions
    if revision and revision != "pve0" and running not in listed:
        known = sorted(m.split("+", 1)[1] for m in listed if m.startswith(base + "+"))
        return (
            f"VM {vm.vmid} runs machine {running}, but qemu-server on {target.name} knows "
            f'{base} only up to {known[-1] if known else "pve0"} (Proxmox refuses: "Installed '
            f'qemu-server ... is too old"): update qemu-server on {target.name} first'
        )
    return ""


def machine_reasons(vm: VmFacts, target: NodeFacts) -> list[Reason]:
    """What stands against the machine a running VM runs on ``target`` (``machine-unsupported``
    denies), or a ``machine-check-skipped`` notice when Proxmox did not name the machine."""
    if vm.status != "running":
        return []
    if not vm.running_machine:
        return [
            Reason(
                "machine-check-skipped",
                f"Proxmox did not say which machine VM {vm.vmid} runs (running-machine is missing "
                "when QMP does not answer in time), so the machine version check was skipped",
            )
        ]
    if target.machines:
        problem = _machine_problem(vm, target)
        return [Reason("machine-unsupported", problem)] if problem else []
    wanted = _machine_version(vm.running_machine)
    offered = _version(target.qemu_version) if target.qemu_version else None
    if wanted and offered and wanted[:2] > offered[:2]:
        return [
            Reason(
                "machine-unsupported",
                f"VM {vm.vmid} runs machine {vm.running_machine}, newer than {target.name}'s QEMU "
                f"{target.qemu_version}: update pve-qemu-kvm on {target.name} first",
            )
        ]
    return []
