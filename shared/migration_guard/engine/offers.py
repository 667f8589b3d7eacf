"""What a CPU type needs from a node and what a node offers, as feature bits.

Every QEMU feature gets a bit; a CPU type's requirement (its catalog features, the VM's flags,
minus what the hypervisor supplies) and a host's offer (its flags after the KVM rules of
``data/flag_rules.json``) are computed once and cached as ints, so a verdict is
``need & ~offered``. Pure: no I/O but the engine's own package data.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from migration_guard.engine import cpu_models
from migration_guard.engine.cpu_models import Catalog
from migration_guard.engine.cpu_spec import CpuSpec, format_cpu
from migration_guard.engine.flags import canonical, linux_name, rules
from migration_guard.engine.hosts import HostCpu

# --- feature bits ---------------------------------------------------------------------------

_BIT: dict[str, int] = {}
_NAMES: list[str] = []
_BIT_LOCK = threading.Lock()


def _bit(feature: str) -> int:
    index = _BIT.get(feature)
    if index is None:
        with _BIT_LOCK:  # the service calls the engine from several threads
            index = _BIT.get(feature)
            if index is None:
                _NAMES.append(feature)
                index = _BIT[feature] = len(_NAMES) - 1
    return 1 << index


def known_bit(feature: str) -> int:
    """The bit of a feature some requirement or offer has named, 0 for one never named."""
    index = _BIT.get(feature)
    return 0 if index is None else 1 << index


def _bits(features: Iterable[str]) -> int:
    mask = 0
    for feature in features:
        mask |= _bit(feature)
    return mask


def _features(mask: int) -> list[str]:
    out = []
    while mask:
        low = mask & -mask
        out.append(_NAMES[low.bit_length() - 1])
        mask ^= low
    return out


def display_name(feature: str) -> str:
    """What an operator should look for: the /proc/cpuinfo name, or the QEMU name for a feature
    Linux does not print (``spec-ctrl``, ``invtsc``, ``mds-no``)."""
    r = rules()
    need = r.host_needs.get(feature)
    if feature in r.bug_derived or (need is not None and need.flags != (linux_name(feature),)):
        return feature
    return linux_name(feature)


_MISSING_NAMES: dict[int, tuple[str, ...]] = {}


def missing_names(mask: int) -> tuple[str, ...]:
    names = _MISSING_NAMES.get(mask)
    if names is None:
        names = _MISSING_NAMES[mask] = tuple(sorted({display_name(f) for f in _features(mask)}))
    return names


# --- requirements (per spec) and offers (per host) --------------------------------------------


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a CPU type needs from a node, precomputed."""

    model: str  # resolved model name ("Skylake-Server-v1", "custom-foo", "host")
    vendor: str | None  # the vendor the model forces, None for generic types
    passthrough: bool
    bits: int  # required features (hypervisor-supplied ones removed)
    nested: bool = False  # nested-virt: + svm/vmx by vendor

    @property
    def features(self) -> frozenset[str]:
        return frozenset(_features(self.bits))


@dataclass(frozen=True, slots=True)
class Offer:
    """What a node's KVM offers a named model, precomputed."""

    name: str
    vendor: str
    bits: int  # offered features
    undecidable: int = 0  # offered only because the host data cannot tell (no bugs: line)
    guest_bits: int = 0  # what a passthrough CPU hands the guest (for host/max comparisons)
    #: offered besides ``bits`` to a model forcing ``for_vendor``
    #: (rule kvm-arch-capabilities-behind-qemu-10.1)
    vendor_bits: int = 0
    for_vendor: str | None = None

    def for_model(self, vendor: str | None) -> int:
        """What this node offers a model that forces ``vendor`` (None: generic, the node's own)."""
        if self.vendor_bits and vendor is not None and vendor == self.for_vendor:
            return self.bits | self.vendor_bits
        return self.bits


_REQ_CACHE: dict[tuple[CpuSpec, int], Requirement] = {}
_OFFER_CACHE: dict[HostCpu, Offer] = {}
# identity front caches: the same objects are asked about again and again (hashing a frozen
# dataclass costs more than the verdict); the object is kept so that its id stays its own
_REQ_BY_ID: dict[int, tuple[CpuSpec, Catalog, tuple[Requirement, str]]] = {}
_OFFER_BY_ID: dict[int, tuple[HostCpu, Offer]] = {}


def _apply(features: set[str], flags: Iterable[tuple[str, bool]]) -> bool | None:
    nested: bool | None = None
    for name, on in flags:
        if name == "nested-virt":
            nested = on
        elif on:
            features.add(name)
        else:
            features.discard(name)
    return nested


def requirement(spec: CpuSpec, models: Catalog | None = None) -> Requirement:
    """The precomputed requirement of a spec (cached). Raises UnknownModelError."""
    return lookup(spec, models)[0]


def lookup(spec: CpuSpec, models: Catalog | None = None) -> tuple[Requirement, str]:
    """(requirement, the spec's label in messages), cached by identity, then by value."""
    cat = models if models is not None else cpu_models.catalog()
    hit = _REQ_BY_ID.get(id(spec))
    if hit is not None and hit[0] is spec and hit[1] is cat:
        return hit[2]
    key = (spec, id(cat))
    req = _REQ_CACHE.get(key)
    if req is None:
        req = _requirement(spec, cat)
        if len(_REQ_CACHE) > 100_000:
            _REQ_CACHE.clear()
        _REQ_CACHE[key] = req
    if len(_REQ_BY_ID) > 100_000:
        _REQ_BY_ID.clear()
    found = (req, _cpu_label(spec))
    _REQ_BY_ID[id(spec)] = (spec, cat, found)
    return found


def _requirement(spec: CpuSpec, cat: Catalog) -> Requirement:
    from migration_guard.errors import UnknownModelError

    if spec.is_passthrough:
        return Requirement(model=spec.cputype, vendor=None, passthrough=True, bits=0)
    nested: bool | None = None
    if spec.custom is not None:
        base = cat.resolve(spec.custom.reported_model)
        if base is None:
            raise UnknownModelError(
                f"custom model {spec.custom.name} builds on unknown CPU type {spec.custom.reported_model!r}"
            )
        features = set(base.features)
        nested = _apply(features, spec.custom.flags)
        name, vendor = spec.cputype, base.vendor
    else:
        model = cat.resolve(spec.cputype)
        if model is None:
            raise UnknownModelError(f"unknown CPU type {spec.cputype!r} (see 'migration-guard cpu models')")
        if model.passthrough:
            return Requirement(model=model.name, vendor=None, passthrough=True, bits=0)
        features = set(model.features)
        name, vendor = model.name, model.vendor
    vm_nested = _apply(features, spec.flags)
    if vm_nested is not None:
        nested = vm_nested
    r = rules()
    features = {f for f in features if not r.is_hypervisor_supplied(f) and not r.is_nested_only(f)}
    return Requirement(
        model=name, vendor=vendor, passthrough=False, bits=_bits(features), nested=bool(nested)
    )


def _amd_native_ssbd(host: HostCpu) -> bool:
    r = rules()
    if host.family is not None:
        if host.model_number is not None:
            return any((host.family, host.model_number) >= limit for limit in r.amd_ssbd_min)
        # the family alone (Proxmox's node status has no model number): decided when every model of
        # the family agrees (family 0x17 holds both Zen 1 and Zen 2: the flags decide)
        low = any((host.family, 0) >= limit for limit in r.amd_ssbd_min)
        high = any((host.family, 255) >= limit for limit in r.amd_ssbd_min)
        if low == high:
            return low
    return bool(r.amd_ssbd_fallback & host.flags)


def _guest_universe() -> frozenset[str]:
    r = rules()
    universe = set(r.qemu_features)
    for model in cpu_models.catalog().models.values():
        universe |= model.features
    universe |= set(r.host_needs)
    universe -= r.never_offered | set(r.bug_derived) | r.unmigratable
    return frozenset(f for f in universe if not r.is_hypervisor_supplied(f) and not r.is_nested_only(f))


_UNIVERSE: list[int] = []


def _universe_bits() -> int:
    if not _UNIVERSE:
        try:
            _UNIVERSE.append(_bits(_guest_universe()))
        except Exception:  # noqa: BLE001 - no catalog: compare what the rules know
            r = rules()
            _UNIVERSE.append(_bits((r.qemu_features | set(r.host_needs)) - r.unmigratable))
    return _UNIVERSE[0]


def offer(host: HostCpu) -> Offer:
    """What a node offers, precomputed (cached on the frozen HostCpu)."""
    hit = _OFFER_BY_ID.get(id(host))
    if hit is not None and hit[0] is host:
        return hit[1]
    off = _OFFER_CACHE.get(host)
    if off is None:
        off = _offer(host)
        if len(_OFFER_CACHE) > 10_000:
            _OFFER_CACHE.clear()
        _OFFER_CACHE[host] = off
    if len(_OFFER_BY_ID) > 10_000:
        _OFFER_BY_ID.clear()
    _OFFER_BY_ID[id(host)] = (host, off)
    return off


def _offer(host: HostCpu) -> Offer:
    r = rules()
    if host.flag_source == "qemu-kvm":
        features = {canonical(f) for f in host.flags}
        bits = _bits(features)
        hidden = r.hidden_arch_capabilities
        extra: set[str] = set()
        if hidden.rule and host.vendor == hidden.vendor and hidden.when_missing not in features:
            extra = set(hidden.always)
            extra |= {f for f, needs in hidden.offered_with if all(n in features for n in needs)}
            extra -= features
        return Offer(
            name=host.name,
            vendor=host.vendor,
            bits=bits,
            guest_bits=bits & _universe_bits(),
            vendor_bits=_bits(extra),
            for_vendor=hidden.model_vendor if extra else None,
        )
    linux = host.flags
    features = {canonical(f) for f in linux}
    features -= r.never_offered
    for feature, need in r.host_needs.items():
        features.discard(feature)
        if need.vendor is not None and need.vendor != host.vendor:
            continue
        if need.supplied_on is not None and need.supplied_on == host.vendor:
            features.add(feature)
            continue
        if not all(flag in linux for flag in need.flags):
            continue
        if need.amd_native_ssbd and host.vendor == "amd" and not _amd_native_ssbd(host):
            continue
        features.add(feature)
    undecidable: set[str] = set()
    for feature, derived in r.bug_derived.items():
        features.discard(feature)
        if derived.vendor is not None and derived.vendor != host.vendor:
            continue
        if not all(flag in linux for flag in derived.flags):
            continue
        if host.bugs is None or derived.undecidable:
            undecidable.add(feature)
            features.add(feature)
        elif not any(bug in host.bugs for bug in derived.absent_bugs):
            features.add(feature)
    bits = _bits(features)
    return Offer(
        name=host.name,
        vendor=host.vendor,
        bits=bits,
        undecidable=_bits(undecidable),
        guest_bits=bits & _universe_bits(),
    )


def nested_bit(vendor: str | None) -> int:
    """The bit of nested virtualization on a ``vendor`` node (svm or vmx), 0 when unknown."""
    feature = rules().nested_virt.get(vendor or "")
    return _bit(feature) if feature else 0


def need_of(req: Requirement, vendor: str | None) -> int:
    """What ``req`` needs, nested virtualization judged with ``vendor``'s extension."""
    if req.nested:
        return req.bits | nested_bit(vendor)
    return req.bits


def _cpu_label(spec: CpuSpec) -> str:
    return spec.raw.strip() or format_cpu(spec)


def clear_caches() -> None:
    """Forget every precomputed requirement and offer (after the catalog changed)."""
    _REQ_CACHE.clear()
    _OFFER_CACHE.clear()
    _REQ_BY_ID.clear()
    _OFFER_BY_ID.clear()
    _UNIVERSE.clear()
