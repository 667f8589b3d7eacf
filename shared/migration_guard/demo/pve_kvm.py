"""The test server's KVM recordings: real hosts' QMP ``query-cpu-model-expansion`` of ``host``
(``data/kvm_expansions``), turned into what pvestatd stores per node, and the flags QEMU recognises.
Imports nothing of the engine: the test server imitates Proxmox from recorded data only."""

from __future__ import annotations

import functools
import json
from importlib import resources

from migration_guard.errors import ConfigError

#: QEMU's aliases among recorded property names (qemu-server PVE/QemuServer/CPUFlags.pm
#: ``$qemu_cpu_flag_alias_map`` normalises the same kind of spelling drift)
_QEMU_ALIASES = {"i64": "lm", "xd": "nx", "pclmuldq": "pclmulqdq", "sse3": "pni", "ffxsr": "fxsr-opt"}
#: boolean properties of QEMU's x86 CPU object that are not CPUID flags (absent from pve-qemu-kvm's
#: recognized-CPUID-flags list, so pvestatd's cpuflags-kvm entry never carries them)
_NOT_CPUID_FLAGS = frozenset(
    {
        "check",
        "enforce",
        "kvm",
        "l3-cache",
        "legacy-cache",
        "full-cpuid-auto-level",
        "fill-mtrr-mask",
        "cpuid-0xb",
        "vmware-cpuid-freq",
        "host-phys-bits",
        "tcg-cpuid",
        "x-hv-synic-kvm-only",
        "lmce",
        "pmu",
        "migratable",
    }
)
#: QEMU's experimental knobs (``x-``) and Hyper-V enlightenments (``hv-``, set on when the
#: expansion is asked with ``hv-passthrough``): properties of the CPU object, not in QEMU's
#: "Recognized CPUID flags" list that pve-qemu-kvm ships
_NOT_CPUID_PREFIXES = ("x-", "hv-")


def kvm_expansion(ref: str) -> list[str]:
    """A real host's recorded QMP ``query-cpu-model-expansion`` of ``host``
    (``shared/migration_guard/data/kvm_expansions/<ref>.json``, each file naming its source), in the form
    pvestatd
    stores in the ``cpuflags-kvm`` key-value entry (pve-manager PVE/Service/pvestatd.pm ->
    qemu-server ``query_supported_cpu_flags``): ``_`` and ``.`` spelled ``-``, aliases folded,
    only CPUID flags."""
    entry = resources.files("migration_guard").joinpath("data", "kvm_expansions", f"{ref}.json")
    if not entry.is_file():
        raise ConfigError(
            f"scenario names kvm_ref {ref!r}, but shared/migration_guard/data/kvm_expansions/{ref}.json does "
            f"not exist"
        )
    props = json.loads(entry.read_text(encoding="utf-8"))["true_props"]
    flags = {_QEMU_ALIASES.get(p, p) for p in (str(p).replace("_", "-").replace(".", "-") for p in props)}
    return sorted(f for f in flags if f not in _NOT_CPUID_FLAGS and not f.startswith(_NOT_CPUID_PREFIXES))


@functools.cache
def recognised_flags() -> tuple[str, ...]:
    """The flags this server lists as QEMU-recognised (pve-qemu-kvm ships the real list as
    /usr/share/kvm/recognized-CPUID-flags-x86_64, read by qemu-server PVE/QemuServer/CPUFlags.pm
    ``query_understood_cpu_flags``): every flag any recording names."""
    folder = resources.files("migration_guard").joinpath("data", "kvm_expansions")
    names: set[str] = set()
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            names.update(kvm_expansion(entry.name[: -len(".json")]))
    return tuple(sorted(names))


def recorded_qemu_flags(node: dict) -> list[str] | None:
    """What the node's KVM offers in QEMU names, as pvestatd stores it in the node's
    ``cpuflags-kvm`` key-value entry: given by the scenario (``qemu_flags``), or a real host's
    recorded expansion (``kvm_ref``). None for a node with neither: nothing recorded, so this
    server has no KVM report for it, as when pvestatd's flag detection failed and it broadcast an
    empty entry (pve-manager PVE/Service/pvestatd.pm ``update_supported_cpuflags``); such a node is
    in no flag's ``supported-on`` (qemu-server PVE/QemuServer/CPUFlags.pm
    ``query_available_cpu_flags`` walks only the nodes with flags in the entry)."""
    if "qemu_flags" in node:
        return sorted(node["qemu_flags"])
    if "kvm_ref" in node:
        return kvm_expansion(node["kvm_ref"])
    return None
