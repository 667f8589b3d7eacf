"""The compatibility engine's migration verdicts, and the engine's public names: pure functions
over plain data, no I/O (feature bits in ``offers``, runnable verdicts in ``runnable``, the
recommendation in ``recommendation``).

Reason codes are stable strings; the service adds its own (target-offline,
machine-unsupported, cpu-type-unknown-on-target, pve-downgrade, local-resources,
storage-unavailable, bypassed, cluster-unreachable, source-unknown, flags-unknown,
precheck-skipped, phys-bits (deny: the guest's physical address width exceeds the target's),
phys-bits-unknown (a notice: a width the answer needs is unknown); engine/phys_bits.py).

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

from dataclasses import dataclass
from typing import Literal

from migration_guard.engine import offers, recommendation, runnable
from migration_guard.engine.cpu_spec import CpuSpec
from migration_guard.engine.hosts import HostCpu
from migration_guard.engine.offers import (
    Requirement,
    display_name,
    lookup,
    missing_names,
    offer,
    requirement,
)
from migration_guard.engine.recommendation import (
    Blocked,
    Namer,
    Recommendation,
    candidates,
    first_named,
    recommend,
    suggestion,
)
from migration_guard.engine.runnable import (
    VENDOR_WORD,
    Reason,
    RunVerdict,
    check_runnable,
    join_names,
    memo_run,
    runnable_matrix,
)

#: the engine's public names, answered here for the parts that ask "the engine"
__all__ = [
    "Blocked",
    "MigrationVerdict",
    "Namer",
    "Reason",
    "Recommendation",
    "RunVerdict",
    "VerdictKind",
    "candidates",
    "check_migration",
    "check_runnable",
    "clear_caches",
    "display_name",
    "first_named",
    "offer",
    "recommend",
    "requirement",
    "runnable_matrix",
]

VerdictKind = Literal["allow", "deny", "unknown"]


@dataclass(frozen=True, slots=True)
class MigrationVerdict:
    verdict: VerdictKind
    reasons: tuple[Reason, ...]
    suggestion: str | None
    cpu: str
    model: str
    missing: tuple[str, ...] = ()


def check_migration(
    spec: CpuSpec,
    source: HostCpu | None,
    target: HostCpu,
    *,
    running: bool = True,
    names: Namer | None = None,
    suggest: bool = True,
) -> MigrationVerdict:
    """source None = unknown source (cross-cluster): named types judged on target alone,
    passthrough types -> unknown with code source-unknown. ``suggest`` False: no suggestion of a
    type both run (its ranking is most of a deny's cost; the matrix shows none)."""
    req, cpu = lookup(spec)
    both = [source, target] if source is not None and source.name != target.name else [target]
    if req.passthrough:
        return _passthrough_migration(spec, req, cpu, source, target, running, names, suggest)
    nested_vendor = source.vendor if (running and source is not None) else target.vendor
    run = memo_run(cpu, req, target, nested_vendor)
    if run.runnable:
        return MigrationVerdict("allow", run.reasons, None, cpu, req.model)
    reasons = list(run.reasons)
    if req.nested and running and source is not None and source.vendor != target.vendor:
        reasons.append(
            Reason(
                "vendor-mismatch",
                f"cpu {cpu} runs nested virtualization with the source's "
                f"{VENDOR_WORD[source.vendor]} extension; "
                f"{target.name} is {VENDOR_WORD[target.vendor]}: stop the VM and start it there instead",
            )
        )
    instead = suggestion(both, spec, names) if suggest else None
    return MigrationVerdict("deny", tuple(reasons), instead, cpu, req.model, run.missing)


def _passthrough_migration(
    spec: CpuSpec,
    req: Requirement,
    cpu: str,
    source: HostCpu | None,
    target: HostCpu,
    running: bool,
    names: Namer | None = None,
    suggest: bool = True,
) -> MigrationVerdict:
    if not running:
        return MigrationVerdict("allow", (), None, cpu, req.model)

    def refused(
        kind: VerdictKind, reason: Reason, hosts: list[HostCpu], missing: tuple[str, ...] = ()
    ) -> MigrationVerdict:
        instead = suggestion(hosts, spell=names) if suggest else None
        return MigrationVerdict(kind, (reason,), instead, cpu, req.model, missing)

    if source is None:
        return refused(
            "unknown",
            Reason(
                "source-unknown",
                f"cpu {cpu} passes the source node's CPU through, and the source is unknown, "
                f"so it cannot be compared with {target.name}",
            ),
            [target],
        )
    if source.vendor == "unknown" or target.vendor == "unknown":
        unknown = source.name if source.vendor == "unknown" else target.name
        return refused(
            "unknown",
            Reason(
                "vendor-unknown",
                f"cpu {cpu} passes {source.name}'s CPU through, "
                f"but the vendor of {unknown}'s CPU is unknown; "
                "give the node's vendor (intel or amd)",
            ),
            [source, target],
        )
    if source.vendor != target.vendor:
        return refused(
            "deny",
            Reason(
                "vendor-mismatch",
                "CPU vendor mismatch: "
                f"cpu {cpu} passes the source's {VENDOR_WORD[source.vendor]} CPU through; "
                f"{target.name} is "
                f"{VENDOR_WORD[target.vendor]}: the guest would crash after cutover",
            ),
            [source, target],
        )
    src, dst = offer(source), offer(target)
    lacking = src.guest_bits & ~dst.guest_bits
    if lacking:
        missing = missing_names(lacking)
        return refused(
            "deny",
            Reason(
                "missing-flags",
                f"{target.name} lacks {join_names(missing)} that cpu {cpu} passes through from "
                f"{source.name}: the guest would crash after cutover",
            ),
            [source, target],
            missing,
        )
    if src.guest_bits == dst.guest_bits and source.model == target.model:
        return MigrationVerdict("allow", (), None, cpu, req.model)
    caution = Reason(
        "passthrough-caution",
        f"{target.name} has every CPU feature {source.name} passes through with cpu {cpu}, "
        "but it is not "
        f"the same CPU ({target.model or 'unknown model'} vs {source.model or 'unknown model'}); "
        "a named type is safer",
    )
    return MigrationVerdict("allow", (caution,), None, cpu, req.model)


def clear_caches() -> None:
    """Forget every precomputed requirement, offer, runnable verdict and recommendation (after the
    catalog changed)."""
    offers.clear_caches()
    runnable.clear_caches()
    recommendation.clear_caches()
