"""What if the cluster gained a node (an imagined one, by its CPU) or lost one: the recommended
CPU type after the change, and the VMs whose CPU type would stop or start running everywhere.

Pure: takes the nodes' facts, the VMs' facts and the change, answers plain data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from migration_guard.engine import pve_versions
from migration_guard.engine.checks import vm_spec
from migration_guard.engine.cpu_spec import CpuSpec
from migration_guard.engine.facts import NodeFacts, VmFacts
from migration_guard.engine.hosts import HostCpu
from migration_guard.engine.recommendation import recommend
from migration_guard.engine.runnable import check_runnable
from migration_guard.engine.verdicts import check_migration
from migration_guard.errors import CpuSpecError


@dataclass(frozen=True, slots=True)
class Lacks:
    node: str
    missing: tuple[str, ...]
    reason: str = ""  # the engine's sentence when it is not "lacks ..." (a vendor mismatch)


@dataclass(frozen=True, slots=True)
class VmChange:
    vmid: int
    name: str
    node: str
    cpu: str
    #: nodes after the change that cannot run the VM's type (``blocked_on_added``: the added ones)
    cannot_run_on: tuple[Lacks, ...] = ()
    #: a VM on a removed node: the remaining (or added) nodes its type runs on
    can_move_to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WhatIf:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    nodes_after: tuple[str, ...]
    recommended_before: str | None
    recommended_after: str | None
    ranked_after: tuple[str, ...]
    reason_after: str | None
    #: VMs whose CPU type would no longer run on every node
    would_break: tuple[VmChange, ...]
    #: VMs whose CPU type some node cannot run today and every node could run after
    would_gain: tuple[VmChange, ...]
    #: VMs on a removed node: where their CPU type can go
    must_move: tuple[VmChange, ...]
    #: VMs some node cannot run today that an added node cannot run either
    blocked_on_added: tuple[VmChange, ...] = ()


def imagined_node(cluster: str, host: HostCpu) -> NodeFacts:
    """An added node as the engine sees a node: online, its CPU judged on its cpuinfo flags."""
    return NodeFacts(
        cluster=cluster,
        name=host.name,
        online=True,
        cpu_model=host.model,
        cpu=host,
        flag_source=host.flag_source,
    )


def _spec(vm: VmFacts) -> CpuSpec | None:
    try:
        return vm_spec(vm)
    except CpuSpecError:
        return None


def _failures(
    spec: CpuSpec, vm: VmFacts, hosts: Sequence[HostCpu], by_name: dict[str, HostCpu]
) -> dict[str, Lacks]:
    """The hosts the VM's type cannot run on (a passthrough type: cannot live-migrate to from its
    node, judged by the engine's migration verdict)."""
    out: dict[str, Lacks] = {}
    source = by_name.get(vm.node)
    for host in hosts:
        if host.name == vm.node:
            continue
        if spec.is_passthrough:
            if source is None:
                continue
            v = check_migration(spec, source, host)
            if v.verdict == "deny":
                vendor = next((r.message for r in v.reasons if r.code == "vendor-mismatch"), "")
                out[host.name] = Lacks(host.name, v.missing, vendor)
            continue
        run = check_runnable(spec, host)
        if not run.runnable:
            out[host.name] = Lacks(host.name, run.missing)
    return out


def what_if(
    nodes: Sequence[NodeFacts],
    vms: Sequence[VmFacts],
    *,
    remove: Sequence[str] = (),
    add: Sequence[NodeFacts] = (),
) -> WhatIf:
    """The cluster of ``nodes`` (online ones with a known CPU count) without ``remove``, with ``add``."""
    gone = set(remove)
    before = [n for n in nodes if n.cpu is not None]
    after = [n for n in before if n.name not in gone] + list(add)
    before_hosts = [n.cpu for n in before if n.cpu is not None]
    after_hosts = [n.cpu for n in after if n.cpu is not None]
    named_before = pve_versions.named_ranking(recommend(before_hosts).ranked, before)
    named_after = pve_versions.named_ranking(recommend(after_hosts).ranked, after)
    by_name = {h.name: h for h in before_hosts + after_hosts}
    breaks: list[VmChange] = []
    gains: list[VmChange] = []
    moves: list[VmChange] = []
    more: list[VmChange] = []
    for vm in sorted(vms, key=lambda v: v.vmid):
        spec = _spec(vm)
        if spec is None:
            continue
        cpu = vm.cpu or "kvm64"
        was = _failures(spec, vm, before_hosts, by_name)
        now = _failures(spec, vm, after_hosts, by_name)
        new = tuple(lacks for name, lacks in now.items() if name not in was)
        if vm.node in gone:
            runs = tuple(h.name for h in after_hosts if h.name not in now)
            moves.append(VmChange(vm.vmid, vm.name, vm.node, cpu, tuple(now.values()), runs))
        elif now and not was:
            breaks.append(VmChange(vm.vmid, vm.name, vm.node, cpu, tuple(now.values())))
        elif was and not now:
            gains.append(VmChange(vm.vmid, vm.name, vm.node, cpu))
        elif new:
            more.append(VmChange(vm.vmid, vm.name, vm.node, cpu, new))
    return WhatIf(
        added=tuple(n.name for n in add),
        removed=tuple(remove),
        nodes_after=tuple(n.name for n in after),
        recommended_before=named_before["recommended"],
        recommended_after=named_after["recommended"],
        ranked_after=tuple(named_after["ranked"]),
        reason_after=named_after["reason"],
        would_break=tuple(breaks),
        would_gain=tuple(gains),
        must_move=tuple(moves),
        blocked_on_added=tuple(more),
    )
