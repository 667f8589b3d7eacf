"""The recommendation: the most capable CPU type every node runs, the better ones that fail and
why, and the suggestion a denied migration carries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from migration_guard.engine import cpu_models
from migration_guard.engine.cpu_models import GENERIC_LADDER, Catalog
from migration_guard.engine.cpu_spec import CpuSpec, format_cpu
from migration_guard.engine.flags import canonical
from migration_guard.engine.hosts import HostCpu
from migration_guard.engine.offers import known_bit, missing_names, need_of, offer, requirement

#: spells a catalog type name as every node involved accepts it; None when some node accepts none
Namer = Callable[[str], str | None]


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
            lacking = need_of(req, host.vendor) & ~offer(host).for_model(req.vendor)
            if lacking:
                fails.append(Blocked(type=name, host=host.name, missing=missing_names(lacking)))
        if fails:
            if not ranked:
                blocked.extend(fails)
        else:
            ranked.append(name)
    return Recommendation(ranked[0] if ranked else None, tuple(ranked), tuple(blocked))


def _where(hosts: Sequence[HostCpu]) -> str:
    names = [h.name for h in hosts]
    if len(names) == 1:
        return f"on {names[0]}"
    if len(names) == 2:
        return f"on both {names[0]} and {names[1]}"
    return f"on all of {', '.join(names)}"


def suggestion(
    hosts: Sequence[HostCpu], spec: CpuSpec | None = None, spell: Namer | None = None
) -> str | None:
    """The best type that runs on every one of ``hosts``; when only the VM's own ``+flags`` stand in
    the way, the same type without them. ``spell``: spells a type as every node's Proxmox accepts
    it (None where some node accepts no name of it: the next type is taken)."""
    if spec is not None and spec.flags and not spec.is_passthrough:
        lacking = 0
        req = requirement(spec)
        for host in hosts:
            lacking |= need_of(req, host.vendor) & ~offer(host).for_model(req.vendor)
        names = [canonical(n) for n, on in spec.flags if on]
        culprits = [n for n in names if lacking & known_bit(n)]
        if culprits:
            kept = tuple(f for f in spec.flags if not (f[1] and f[0] in culprits))
            lighter = CpuSpec(**{**{f: getattr(spec, f) for f in spec.__slots__}, "flags": kept, "raw": ""})
            req = requirement(lighter)
            if all(not (need_of(req, h.vendor) & ~offer(h).for_model(req.vendor)) for h in hosts):
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


def clear_caches() -> None:
    """Forget every memoised recommendation."""
    _REC_CACHE.clear()
