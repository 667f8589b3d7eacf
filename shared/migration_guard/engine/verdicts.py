"""The compatibility engine: pure functions over plain data, no I/O.

Reason codes are stable strings; the service adds its own (target-offline,
machine-unsupported, cpu-type-unknown-on-target, pve-downgrade, local-resources,
storage-unavailable, bypassed, cluster-unreachable, source-unknown, flags-unknown,
precheck-skipped).

How a verdict is made: every QEMU feature gets a bit; a CPU type's requirement (its catalog
features, the VM's flags, minus what the hypervisor supplies) and a host's offer (its flags
after the KVM rules of ``data/flag_rules.json``) are computed once and cached as ints, so a
verdict is ``need & ~offered``. Decisions documented here:

* Named Intel/AMD models are started with their vendor forced; QEMU's ``enforce`` checks
  features only, so a model of the other vendor runs when the features exist (EPYC-Rome on an
  Intel node fails on sse4a, misalignsse, ...). Such a run carries a ``vendor-forced`` caution.
* ARCH_CAPABILITIES features (``mds-no``, ``taa-no``, ...) come from the host's ``bugs:`` line;
  without one they are undecidable: never reported missing, a ``flags-undecidable`` caution instead.
* ``nested-virt`` means ``svm`` on AMD and ``vmx`` on Intel: the node's vendor at start, the
  source's vendor for a live migration (the target gets the source's ``-cpu``).
* A node's QEMU KVM view (``/cluster/qemu/cpu-flags``) of an AMD node with QEMU 10.1+ lacks the
  ARCH_CAPABILITIES bits, which KVM still gives to an Intel model: rule
  ``kvm-arch-capabilities-behind-qemu-10.1`` of the data adds them for such models only.
* ``cpu: host`` is started migratable: features QEMU never hands a migratable guest (``invtsc``,
  rule ``host-cpu-is-migratable``) are not compared between two passthrough CPUs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from migration_guard.engine import cpu_models
from migration_guard.engine.cpu_models import GENERIC_LADDER, Catalog
from migration_guard.engine.cpu_spec import CpuSpec, format_cpu
from migration_guard.engine.flags import canonical, linux_name, rules
from migration_guard.engine.hosts import HostCpu

VerdictKind = Literal["allow", "deny", "unknown"]
#: spells a catalog type name as every node involved accepts it; None when some node accepts none
Namer = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class Reason:
    code: str  # "missing-flags", "vendor-mismatch", "unknown-model", "passthrough-caution", ...
    message: str  # one sentence for an operator


@dataclass(frozen=True, slots=True)
class RunVerdict:
    cpu: str  # the spec as given
    host: str
    runnable: bool
    missing: tuple[str, ...]  # Linux names, sorted
    model: str  # the resolved model (e.g. "Skylake-Server-v1")
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True, slots=True)
class MigrationVerdict:
    verdict: VerdictKind
    reasons: tuple[Reason, ...]
    suggestion: str | None
    cpu: str
    model: str
    missing: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Blocked:
    type: str
    host: str
    missing: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Recommendation:
    recommended: str | None
    ranked: tuple[str, ...]  # best first; every type runs on every host
    blocked: tuple[Blocked, ...]  # better types that fail, with the host and what it lacks


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


def _missing_names(mask: int) -> tuple[str, ...]:
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
_RUN_CACHE: dict[tuple, tuple[Requirement, Offer, RunVerdict]] = {}
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
    return _lookup(spec, models)[0]


def _lookup(spec: CpuSpec, models: Catalog | None = None) -> tuple[Requirement, str]:
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


def clear_caches() -> None:
    """Forget every precomputed requirement, offer and recommendation (after the catalog changed)."""
    _REQ_CACHE.clear()
    _OFFER_CACHE.clear()
    _REQ_BY_ID.clear()
    _OFFER_BY_ID.clear()
    _RUN_CACHE.clear()
    _REC_CACHE.clear()
    _UNIVERSE.clear()


def _nested_bit(vendor: str | None) -> int:
    feature = rules().nested_virt.get(vendor or "")
    return _bit(feature) if feature else 0


def _need(req: Requirement, vendor: str | None) -> int:
    if req.nested:
        return req.bits | _nested_bit(vendor)
    return req.bits


# --- messages -------------------------------------------------------------------------------

_VENDOR_WORD = {"intel": "Intel", "amd": "AMD", "unknown": "of unknown vendor"}


def _cpu_label(spec: CpuSpec) -> str:
    return spec.raw.strip() or format_cpu(spec)


def _join(names: Sequence[str], limit: int = 12) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def _missing_reason(host: str, missing: Sequence[str], cpu: str) -> Reason:
    return Reason(
        "missing-flags",
        f"{host} lacks {_join(missing)} needed by cpu {cpu}: QEMU refuses to start it there",
    )


def _undecidable_reason(host: HostCpu, mask: int, cpu: str) -> Reason:
    names = _join(_missing_names(mask))
    if host.bugs is None:
        why = "its CPU data has no bugs: line"
        fix = "read the bugs: line of /proc/cpuinfo on that node"
    else:
        why = "/proc/cpuinfo never shows them"
        fix = "compare QEMU's cpu-flags of that node (Proxmox VE 9.2+)"
    return Reason(
        "flags-undecidable",
        f"cannot tell whether {host.name} offers {names} needed by cpu {cpu}: {why}; {fix} to be sure",
    )


def _vendor_forced_reason(req: Requirement, host: HostCpu, cpu: str) -> Reason:
    return Reason(
        "vendor-forced",
        f"cpu {cpu} shows the guest an {_VENDOR_WORD[req.vendor or 'unknown']} CPU "
        f"on {_VENDOR_WORD[host.vendor]} "
        f"node {host.name}: QEMU starts it because the features exist, but test the guest OS there first",
    )


# --- verdicts -------------------------------------------------------------------------------


def check_runnable(spec: CpuSpec, host: HostCpu) -> RunVerdict:
    """Can a VM with this CPU type start on this node? Missing features in Linux names, sorted."""
    req, cpu = _lookup(spec)
    return _run(cpu, req, host, host.vendor)


def _run(cpu: str, req: Requirement, host: HostCpu, nested_vendor: str | None) -> RunVerdict:
    off = offer(host)
    # equal inputs give one shared (immutable) verdict: building a frozen dataclass costs more
    # than deciding it
    key = (cpu, id(req), id(off), nested_vendor)
    hit = _RUN_CACHE.get(key)
    if hit is not None and hit[0] is req and hit[1] is off:
        return hit[2]
    verdict = _decide(cpu, req, off, host, nested_vendor)
    if len(_RUN_CACHE) > 200_000:
        _RUN_CACHE.clear()
    _RUN_CACHE[key] = (req, off, verdict)
    return verdict


def _decide(cpu: str, req: Requirement, off: Offer, host: HostCpu, nested_vendor: str | None) -> RunVerdict:
    if req.passthrough:
        return RunVerdict(cpu=cpu, host=host.name, runnable=True, missing=(), model=req.model)
    need = _need(req, nested_vendor)
    lacking = need & ~off.for_model(req.vendor)
    reasons: list[Reason] = []
    if lacking:
        missing = _missing_names(lacking)
        reasons.append(_missing_reason(host.name, missing, cpu))
    else:
        missing = ()
        unsure = need & off.undecidable
        if unsure:
            reasons.append(_undecidable_reason(host, unsure, cpu))
        if req.vendor is not None and host.vendor != "unknown" and req.vendor != host.vendor:
            reasons.append(_vendor_forced_reason(req, host, cpu))
    return RunVerdict(
        cpu=cpu,
        host=host.name,
        runnable=not lacking,
        missing=missing,
        model=req.model,
        reasons=tuple(reasons),
    )


def runnable_matrix(specs: Sequence[CpuSpec], hosts: Sequence[HostCpu]) -> list[list[bool]]:
    """The fast path: ``matrix[i][j]`` is whether ``specs[i]`` starts on ``hosts[j]``."""
    offers = [offer(h) for h in hosts]
    nested_need = [_nested_bit(h.vendor) for h in hosts]
    rows: dict[Requirement, list[bool]] = {}
    result = []
    for spec in specs:
        req = requirement(spec)
        row = rows.get(req)
        if row is None:
            if req.passthrough:
                row = [True] * len(hosts)
            elif req.nested:
                row = [
                    not ((req.bits | n) & ~o.for_model(req.vendor))
                    for n, o in zip(nested_need, offers, strict=True)
                ]
            else:
                bits = req.bits
                row = [not (bits & ~o.for_model(req.vendor)) for o in offers]
            rows[req] = row
        result.append(row)
    return result


def _where(hosts: Sequence[HostCpu]) -> str:
    names = [h.name for h in hosts]
    if len(names) == 1:
        return f"on {names[0]}"
    if len(names) == 2:
        return f"on both {names[0]} and {names[1]}"
    return f"on all of {', '.join(names)}"


def _suggestion(
    hosts: Sequence[HostCpu], spec: CpuSpec | None = None, spell: Namer | None = None
) -> str | None:
    """The best type that runs on every one of ``hosts``; when only the VM's own ``+flags`` stand in
    the way, the same type without them. ``spell``: spells a type as every node's Proxmox accepts
    it (None where some node accepts no name of it: the next type is taken)."""
    if spec is not None and spec.flags and not spec.is_passthrough:
        lacking = 0
        req = requirement(spec)
        for host in hosts:
            lacking |= _need(req, host.vendor) & ~offer(host).for_model(req.vendor)
        names = [canonical(n) for n, on in spec.flags if on]
        culprits = [n for n in names if n in _BIT and lacking & (1 << _BIT[n])]
        if culprits:
            kept = tuple(f for f in spec.flags if not (f[1] and f[0] in culprits))
            lighter = CpuSpec(**{**{f: getattr(spec, f) for f in spec.__slots__}, "flags": kept, "raw": ""})
            req = requirement(lighter)
            if all(not (_need(req, h.vendor) & ~offer(h).for_model(req.vendor)) for h in hosts):
                dropped = ", ".join("+" + n for n in culprits)
                return f"{format_cpu(lighter)} (without {dropped}) runs {_where(hosts)}"
    rec = recommend(hosts)
    best = first_named(rec.ranked, spell)
    if best is None:
        return None
    return f"{best} runs {_where(hosts)}"


def first_named(ranked: Sequence[str], names: Namer | None) -> str | None:
    """The first of ``ranked`` that ``names`` can spell (spelled so); the first one without it."""
    for name in ranked:
        spelled = names(name) if names is not None else name
        if spelled is not None:
            return spelled
    return None


def check_migration(
    spec: CpuSpec,
    source: HostCpu | None,
    target: HostCpu,
    *,
    running: bool = True,
    names: Namer | None = None,
) -> MigrationVerdict:
    """source None = unknown source (cross-cluster): named types judged on target alone,
    passthrough types -> unknown with code source-unknown."""
    req, cpu = _lookup(spec)
    both = [source, target] if source is not None and source.name != target.name else [target]
    if req.passthrough:
        return _passthrough_migration(spec, req, cpu, source, target, running, names)
    nested_vendor = source.vendor if (running and source is not None) else target.vendor
    run = _run(cpu, req, target, nested_vendor)
    if run.runnable:
        return MigrationVerdict("allow", run.reasons, None, cpu, req.model)
    reasons = list(run.reasons)
    if req.nested and running and source is not None and source.vendor != target.vendor:
        reasons.append(
            Reason(
                "vendor-mismatch",
                f"cpu {cpu} runs nested virtualization with the source's "
                f"{_VENDOR_WORD[source.vendor]} extension; "
                f"{target.name} is {_VENDOR_WORD[target.vendor]}: stop the VM and start it there instead",
            )
        )
    suggestion = _suggestion(both, spec, names)
    return MigrationVerdict("deny", tuple(reasons), suggestion, cpu, req.model, run.missing)


def _passthrough_migration(
    spec: CpuSpec,
    req: Requirement,
    cpu: str,
    source: HostCpu | None,
    target: HostCpu,
    running: bool,
    names: Namer | None = None,
) -> MigrationVerdict:
    if not running:
        return MigrationVerdict("allow", (), None, cpu, req.model)
    if source is None:
        return MigrationVerdict(
            "unknown",
            (
                Reason(
                    "source-unknown",
                    f"cpu {cpu} passes the source node's CPU through, and the source is unknown, "
                    f"so it cannot be compared with {target.name}",
                ),
            ),
            _suggestion([target], spell=names),
            cpu,
            req.model,
        )
    if source.vendor == "unknown" or target.vendor == "unknown":
        unknown = source.name if source.vendor == "unknown" else target.name
        return MigrationVerdict(
            "unknown",
            (
                Reason(
                    "vendor-unknown",
                    f"cpu {cpu} passes {source.name}'s CPU through, "
                    f"but the vendor of {unknown}'s CPU is unknown; "
                    "give the node's vendor (intel or amd)",
                ),
            ),
            _suggestion([source, target], spell=names),
            cpu,
            req.model,
        )
    if source.vendor != target.vendor:
        return MigrationVerdict(
            "deny",
            (
                Reason(
                    "vendor-mismatch",
                    "CPU vendor mismatch: "
                    f"cpu {cpu} passes the source's {_VENDOR_WORD[source.vendor]} CPU through; "
                    f"{target.name} is "
                    f"{_VENDOR_WORD[target.vendor]}: the guest would crash after cutover",
                ),
            ),
            _suggestion([source, target], spell=names),
            cpu,
            req.model,
        )
    src, dst = offer(source), offer(target)
    lacking = src.guest_bits & ~dst.guest_bits
    if lacking:
        missing = _missing_names(lacking)
        return MigrationVerdict(
            "deny",
            (
                Reason(
                    "missing-flags",
                    f"{target.name} lacks {_join(missing)} that cpu {cpu} passes through from {source.name}: "
                    "the guest would crash after cutover",
                ),
            ),
            _suggestion([source, target], spell=names),
            cpu,
            req.model,
            missing,
        )
    if src.guest_bits == dst.guest_bits and source.model == target.model:
        return MigrationVerdict("allow", (), None, cpu, req.model)
    return MigrationVerdict(
        "allow",
        (
            Reason(
                "passthrough-caution",
                f"{target.name} has every CPU feature {source.name} passes through with cpu {cpu}, "
                "but it is not "
                f"the same CPU ({target.model or 'unknown model'} vs {source.model or 'unknown model'}); "
                "a named type is safer",
            ),
        ),
        None,
        cpu,
        req.model,
    )


# --- recommendation -------------------------------------------------------------------------


def candidates(hosts: Sequence[HostCpu], models: Catalog | None = None) -> list[str]:
    """The types a recommendation weighs: Proxmox's generic ladder, plus the named QEMU models of
    the hosts' vendor when every host has the same one. Best (most features) first."""
    cat = models if models is not None else cpu_models.catalog()
    names = [n for n in GENERIC_LADDER if cat.resolve(n) is not None]
    taken = {cat.resolve(n).name for n in names}  # type: ignore[union-attr]
    vendors = {h.vendor for h in hosts}
    if len(vendors) == 1 and next(iter(vendors)) in ("intel", "amd"):
        vendor = next(iter(vendors))
        for model in cat.models.values():
            if (
                model.vendor == vendor
                and not model.alias_of
                and not model.deprecated
                and not model.passthrough
                and "lm" in model.features  # 64-bit types only: nobody wants a 486 baseline
                and model.name not in taken  # kvm64-v1 is kvm64
            ):
                names.append(model.name)
    ladder = {n: i for i, n in enumerate(GENERIC_LADDER)}

    def rank(name: str):
        req = requirement(CpuSpec(raw=name, cputype=name), cat)
        return (-req.bits.bit_count(), ladder.get(name, len(ladder)), name)

    return sorted(dict.fromkeys(names), key=rank)


_REC_CACHE: dict[tuple[HostCpu, ...], Recommendation] = {}


def recommend(hosts: Sequence[HostCpu]) -> Recommendation:
    """The most capable type every host runs, every type that runs everywhere (best first), and the
    better types that fail with the host and what it lacks."""
    key = tuple(hosts)
    rec = _REC_CACHE.get(key)
    if rec is not None:
        return rec
    rec = _recommend(key)
    if len(_REC_CACHE) > 4096:
        _REC_CACHE.clear()
    _REC_CACHE[key] = rec
    return rec


def _recommend(hosts: tuple[HostCpu, ...]) -> Recommendation:
    if not hosts:
        return Recommendation(None, (), ())
    ranked: list[str] = []
    blocked: list[Blocked] = []
    for name in candidates(hosts):
        spec = CpuSpec(raw=name, cputype=name)
        req = requirement(spec)
        fails = []
        for host in hosts:
            lacking = _need(req, host.vendor) & ~offer(host).for_model(req.vendor)
            if lacking:
                fails.append(Blocked(type=name, host=host.name, missing=_missing_names(lacking)))
        if fails:
            if not ranked:
                blocked.extend(fails)
        else:
            ranked.append(name)
    return Recommendation(ranked[0] if ranked else None, tuple(ranked), tuple(blocked))
