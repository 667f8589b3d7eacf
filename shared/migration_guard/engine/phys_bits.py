"""Physical address width (``phys-bits``): a guest started with a wider physical address size than
the target node's CPU can crash after a live migration, with an identical instruction set.

What the guest sees (qemu-server ``PVE/QemuServer/CPUConfig.pm`` ``get_cpu_options``, QEMU
``target/i386/host-cpu.c``):

* ``phys-bits=N`` (the VM's cpu line, else its custom model's; the VM's wins): N bits, whatever
  the node offers (QEMU only warns when N differs from the host);
* ``phys-bits=host`` is written ``host-phys-bits=true``: the width of the node the VM started on;
  a live migration keeps it (the guest never re-reads it), so the source's width counts;
* ``cpu: host``/``max`` without phys-bits: QEMU sets ``host-phys-bits`` for them (the source's width;
  judged only when both nodes' widths are known: no notice for the implied setting);
* any other type without phys-bits: QEMU's default (40 bits), the same on every node: no
  migration matter, not judged here.

A node's width: Proxmox's API does not report it (pve-common ``PVE::ProcFSTools::read_cpuinfo`` reads
no ``address sizes``; only qemu-server's ``get_host_phys_address_bits`` reads it on the node
itself). So it comes from the operator's setting, else from the recorded ``/proc/cpuinfo`` of the
same CPU model in ``data/cpus`` (``address_sizes``, bare-metal dumps only). Unknown: a notice,
never a veto.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from migration_guard.engine.cpu_spec import CpuSpec
from migration_guard.engine.hosts import HostCpu, phys_bits_of
from migration_guard.engine.runnable import Reason

CODE = "phys-bits"
UNKNOWN_CODE = "phys-bits-unknown"


@cache
def recorded_widths() -> dict[str, int]:
    """CPU model name (as /proc/cpuinfo and Proxmox's node status print it) -> its physical address
    width, from the shipped real CPUs (``data/cpus/*.json`` with ``address_sizes``)."""
    widths: dict[str, int] = {}
    folder = resources.files("migration_guard").joinpath("data", "cpus")
    for entry in folder.iterdir():
        if not entry.name.endswith(".json"):
            continue
        data = json.loads(entry.read_text(encoding="utf-8"))
        bits = phys_bits_of(data.get("address_sizes"))
        name = str(data.get("model_name") or "").strip()
        if bits is not None and name and "hypervisor" not in data.get("flags", ()):
            widths[name] = bits
    return widths


def recorded_width(model_name: str) -> int | None:
    """The recorded width of a CPU model, None when the project has no bare-metal dump of it."""
    return recorded_widths().get(model_name.strip())


def wanted(spec: CpuSpec) -> str | None:
    """The guest's phys-bits setting: ``"N"``, ``"host"`` or None (QEMU's default)."""
    if spec.phys_bits is not None:
        return spec.phys_bits
    if spec.custom is not None and spec.custom.phys_bits is not None:
        return spec.custom.phys_bits
    if spec.is_passthrough:
        return "host"
    return None


def reasons(spec: CpuSpec, source: HostCpu | None, target: HostCpu, *, running: bool) -> list[Reason]:
    """A ``phys-bits`` deny reason when the guest's width is wider than ``target``'s, a
    ``phys-bits-unknown`` notice when a width the answer needs is unknown, else nothing."""
    setting = wanted(spec)
    if setting is None:
        return []
    # cpu host/max take the host's width without asking: judged only when both widths are known
    implied = spec.is_passthrough and setting == "host" and spec.phys_bits is None
    if implied and (source is None or source.phys_bits is None or target.phys_bits is None):
        return []
    if setting == "host":
        if not running:
            return []  # a fresh start takes the target's own width
        if source is None or source.phys_bits is None:
            where = source.name if source is not None else "the source node"
            return [
                Reason(
                    UNKNOWN_CODE,
                    f"the guest runs with {where}'s physical address width (phys-bits=host), which is "
                    "unknown: its width against the target's was not checked",
                )
            ]
        bits, why = source.phys_bits, f"phys-bits=host on {source.name}"
    else:
        bits, why = int(setting), f"phys-bits={setting}"
    if target.phys_bits is None:
        return [
            Reason(
                UNKNOWN_CODE,
                f"the physical address width of {target.name} is unknown: the guest's {bits} bits "
                f"({why}) were not checked against it (set MIGRATION_GUARD_NODE_PHYS_BITS)",
            )
        ]
    if bits > target.phys_bits:
        return [
            Reason(
                CODE,
                f"the guest addresses {bits} bits of physical memory ({why}) and {target.name} "
                f"offers {target.phys_bits}: it can crash after the move; give the VM "
                f"phys-bits={target.phys_bits} (or less) and restart it",
            )
        ]
    return []
