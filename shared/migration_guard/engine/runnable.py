"""Can a VM with this CPU type start on this node: the runnable verdict, its reasons and the
fast matrix of many types on many nodes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from migration_guard.engine.cpu_spec import CpuSpec
from migration_guard.engine.hosts import HostCpu
from migration_guard.engine.offers import (
    Offer,
    Requirement,
    lookup,
    missing_names,
    need_of,
    nested_bit,
    offer,
    requirement,
)


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


_RUN_CACHE: dict[tuple, tuple[Requirement, Offer, RunVerdict]] = {}


# --- messages -------------------------------------------------------------------------------

VENDOR_WORD = {"intel": "Intel", "amd": "AMD", "unknown": "of unknown vendor"}


def join_names(names: Sequence[str], limit: int = 12) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def _missing_reason(host: str, missing: Sequence[str], cpu: str) -> Reason:
    return Reason(
        "missing-flags",
        f"{host} lacks {join_names(missing)} needed by cpu {cpu}: QEMU refuses to start it there",
    )


def _undecidable_reason(host: HostCpu, mask: int, cpu: str) -> Reason:
    names = join_names(missing_names(mask))
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
        f"cpu {cpu} shows the guest an {VENDOR_WORD[req.vendor or 'unknown']} CPU "
        f"on {VENDOR_WORD[host.vendor]} "
        f"node {host.name}: QEMU starts it because the features exist, but test the guest OS there first",
    )


# --- verdicts -------------------------------------------------------------------------------


def check_runnable(spec: CpuSpec, host: HostCpu) -> RunVerdict:
    """Can a VM with this CPU type start on this node? Missing features in Linux names, sorted."""
    req, cpu = lookup(spec)
    return memo_run(cpu, req, host, host.vendor)


def memo_run(cpu: str, req: Requirement, host: HostCpu, nested_vendor: str | None) -> RunVerdict:
    """The runnable verdict of ``req`` (labelled ``cpu``) on ``host``, memoised."""
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
    need = need_of(req, nested_vendor)
    lacking = need & ~off.for_model(req.vendor)
    reasons: list[Reason] = []
    if lacking:
        missing = missing_names(lacking)
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
    nested_need = [nested_bit(h.vendor) for h in hosts]
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


def clear_caches() -> None:
    """Forget every memoised runnable verdict."""
    _RUN_CACHE.clear()
