"""The cluster's best custom CPU model: the richest CPU every chosen node's KVM runs, written the way
Proxmox's ``cpu-models.conf`` needs it (libvirt's ``hypervisor-cpu-baseline``, vCenter's EVC).

A custom model (qemu-server ``PVE/QemuServer/CPUConfig.pm``) is a ``reported-model`` (a QEMU model
from Proxmox's model list: not one of Proxmox's own x86-64-vN types, which are ``qemu64`` plus
flags) plus ``flags`` (``+FLAG;-FLAG``: any flag QEMU knows, unlike a VM's own ``flags=``) and an
optional ``phys-bits``. Here: the best model every node runs (the recommendation's candidates),
plus every feature beyond it that every node's KVM offers that model, minus what must not be
there:

* features QEMU marks unmigratable (``invtsc``: ``unmigratable_flags`` in QEMU
  ``target/i386/cpu.c``): a VM with one cannot be live-migrated at all;
* nested virtualization (``svm``/``vmx`` and their sub-features): Proxmox sets it per VM with
  ``flags=+nested-virt``, and a named model under KVM starts without it;
* features a node's /proc/cpuinfo cannot tell (KVM derives them from a ``bugs:`` line the dump
  lacks): never promised.

Features KVM gives every guest anyway (``x2apic``, ``hypervisor``, the ``kvm*`` paravirtual bits)
are not written. ``phys-bits`` is the narrowest node's physical address width, left out when
some node's width is unknown. Pure: hosts in, plan out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from migration_guard.engine import cpu_models
from migration_guard.engine.cpu_models import GENERIC_LADDER
from migration_guard.engine.cpu_spec import CpuSpec, CustomModel
from migration_guard.engine.flags import rules
from migration_guard.engine.hosts import HostCpu
from migration_guard.engine.offers import _features, need_of, offer, requirement
from migration_guard.engine.recommendation import candidates

#: spells a catalog model name as every node's Proxmox accepts it, None when some node knows none
Namer = Callable[[str], str | None]

DEFAULT_NAME = "cluster-baseline"
#: the generic types Proxmox lets a custom model report (``kvm64`` is its default)
_GENERIC_REPORTED = ("qemu64", "kvm64")

UNMIGRATABLE_WHY = "QEMU marks it unmigratable: a VM with it cannot be live-migrated at all"
NESTED_WHY = "nested virtualization: set it per VM with flags=+nested-virt instead"
#: offered by a node's KVM, but no feature a model should ask for (QEMU ``target/i386/cpu.c``)
NOT_REQUESTED = {
    "pdcm": "QEMU ties it to the guest's PMU, which Proxmox leaves off: dropped or refused by QEMU",
    "ospke": "the guest OS sets it (CR4.PKE): no feature to request (QEMU's models never list it)",
    "osxsave": "the guest OS sets it (CR4.OSXSAVE): no feature to request",
    "hv-evmcs": "a Hyper-V enlightenment for nested guests: set it per VM (flags=+hv-evmcs)",
}


@dataclass(frozen=True, slots=True)
class LeftOut:
    flag: str
    why: str


@dataclass(frozen=True, slots=True)
class Plan:
    """A custom model every host runs, and what it gains over Proxmox's generic levels."""

    name: str
    nodes: tuple[str, ...]
    reported_model: str
    flags: tuple[str, ...]  # canonical QEMU names, each written as +FLAG
    phys_bits: int | None
    left_out: tuple[LeftOut, ...]
    level: str | None  # the best x86-64-vN level (or kvm64) every host runs
    gains: tuple[str, ...]  # features the model has beyond that level
    notes: tuple[str, ...] = ()

    @property
    def model(self) -> CustomModel:
        return CustomModel(
            name=self.name,
            reported_model=self.reported_model,
            flags=tuple((f, True) for f in self.flags),
            phys_bits=None if self.phys_bits is None else str(self.phys_bits),
        )

    @property
    def spec(self) -> CpuSpec:
        """The ``cpu: custom-NAME`` spec of a VM that uses the model."""
        return CpuSpec(raw=f"custom-{self.name}", cputype=f"custom-{self.name}", custom=self.model)

    @property
    def section(self) -> str:
        return section_text(self.model)


def section_text(model: CustomModel) -> str:
    """The model's ``cpu-models.conf`` section as Proxmox writes it (pve-common
    ``PVE::SectionConfig::write_config``: ``TYPE: ID``, then one tab-indented ``key value`` line per
    property in sorted order, then an empty line; qemu-server always writes ``reported-model``)."""
    props: dict[str, str] = {"reported-model": model.reported_model}
    if model.flags:
        props["flags"] = ";".join(("+" if on else "-") + name for name, on in model.flags)
    if model.phys_bits is not None:
        props["phys-bits"] = model.phys_bits
    if model.guest_phys_bits is not None:
        props["guest-phys-bits"] = str(model.guest_phys_bits)
    if model.hidden:
        props["hidden"] = "1"
    if model.hv_vendor_id is not None:
        props["hv-vendor-id"] = model.hv_vendor_id
    lines = [f"cpu-model: {model.name}"] + [f"\t{key} {props[key]}" for key in sorted(props)]
    return "\n".join(lines) + "\n\n"


def _spec(name: str) -> CpuSpec:
    return CpuSpec(raw=name, cputype=name)


def _runs_everywhere(name: str, hosts: Sequence[HostCpu]) -> bool:
    req = requirement(_spec(name))
    return all(not (need_of(req, h.vendor) & ~offer(h).for_model(req.vendor)) for h in hosts)


def _reported_model(hosts: Sequence[HostCpu], spell: Namer | None) -> str:
    """The best QEMU model every host runs, spelled as every node's Proxmox accepts it; a generic
    one (``qemu64``, ``kvm64``) when the hosts' vendors differ (a named model forces its vendor)."""
    ladder = set(GENERIC_LADDER) - set(_GENERIC_REPORTED)
    names = [n for n in candidates(hosts) if n not in ladder] + list(_GENERIC_REPORTED)
    for name in dict.fromkeys(names):
        if not _runs_everywhere(name, hosts):
            continue
        spelled = spell(name) if spell is not None else name
        if spelled is not None:
            return spelled
    return "kvm64"


def _universe() -> frozenset[str]:
    """Every CPU feature the guard knows by its QEMU name."""
    r = rules()
    names = set(r.qemu_features) | set(r.host_needs) | set(r.bug_derived)
    for model in cpu_models.catalog().models.values():
        names |= model.features
    return frozenset(names - r.not_features)


def _sort_out(extra: int, hosts: Sequence[HostCpu]) -> tuple[list[str], list[LeftOut]]:
    r = rules()
    universe = _universe()
    undecidable: dict[str, list[str]] = {}
    for host in hosts:
        for feature in _features(offer(host).undecidable):
            undecidable.setdefault(feature, []).append(host.name)
    kept: list[str] = []
    left: list[LeftOut] = []
    for feature in sorted(_features(extra)):
        if feature not in universe or r.is_hypervisor_supplied(feature):
            continue  # no CPU feature (a QEMU knob), or KVM gives every guest it anyway
        if feature in r.unmigratable:
            left.append(LeftOut(feature, UNMIGRATABLE_WHY))
        elif feature in ("svm", "vmx") or r.is_nested_only(feature):
            left.append(LeftOut(feature, NESTED_WHY))
        elif feature in NOT_REQUESTED or feature.startswith("hv-"):
            left.append(LeftOut(feature, NOT_REQUESTED.get(feature, NOT_REQUESTED["hv-evmcs"])))
        elif feature in undecidable:
            who = ", ".join(undecidable[feature])
            left.append(
                LeftOut(feature, f"{who}'s /proc/cpuinfo cannot tell it (no bugs: line): not promised")
            )
        else:
            kept.append(feature)
    return kept, left


def _level(hosts: Sequence[HostCpu]) -> str | None:
    for name in GENERIC_LADDER:
        if _runs_everywhere(name, hosts):
            return name
    return None


def plan(hosts: Sequence[HostCpu], *, name: str = DEFAULT_NAME, spell: Namer | None = None) -> Plan:
    """The custom model every one of ``hosts`` runs (at least one host). ``spell``: how every
    node's Proxmox spells a model name (the reported model must be one they all know)."""
    if not hosts:
        raise ValueError("a custom model needs at least one node")
    reported = _reported_model(hosts, spell)
    req = requirement(_spec(reported))
    common = -1
    for host in hosts:
        common &= offer(host).for_model(req.vendor)
    flags, left = _sort_out(common & ~req.bits, hosts)
    widths = [h.phys_bits for h in hosts]
    notes: list[str] = []
    if any(w is None for w in widths):
        unknown = ", ".join(h.name for h in hosts if h.phys_bits is None)
        notes.append(
            f"the physical address width of {unknown} is unknown, so phys-bits is left out "
            "(QEMU then gives a named model 40 bits); set it once the widths are known"
        )
    phys = None if any(w is None for w in widths) else min(w for w in widths if w is not None)
    made = Plan(
        name=name,
        nodes=tuple(h.name for h in hosts),
        reported_model=reported,
        flags=tuple(flags),
        phys_bits=phys,
        left_out=tuple(left),
        level=_level(hosts),
        gains=(),
        notes=tuple(notes),
    )
    if made.level is None:
        return made
    gained = requirement(made.spec).bits & ~requirement(_spec(made.level)).bits
    return replace(made, gains=tuple(sorted(_features(gained))))


def gain_of(spec: CpuSpec, model: Plan) -> tuple[str, ...] | None:
    """What a VM of ``spec`` would gain by moving to the model: the features the model adds, when
    the VM's type is a lower level (its features a proper subset of the model's); else None."""
    if spec.is_passthrough or spec.custom is not None:
        return None
    mine = requirement(spec).bits
    theirs = requirement(model.spec).bits
    if mine & ~theirs or mine == theirs:
        return None
    return tuple(sorted(_features(theirs & ~mine)))
