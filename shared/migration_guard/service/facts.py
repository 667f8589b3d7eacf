"""The facts of one cluster through the cache and the cluster reader: the node and VM lists,
QEMU's flag report, one node's status (with its Proxmox release and CPU types), one VM's config
and status, Proxmox's precondition check. Proxmox calls are blocking (proxmoxer): they run in a
thread pool."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from migration_guard.cluster.ha import HaConfig
from migration_guard.cluster.reader import vm_facts_from
from migration_guard.cluster.vm_status import VmStatusReader
from migration_guard.engine import phys_bits
from migration_guard.engine.facts import NodeFacts, Precondition, VmFacts, VmSummary
from migration_guard.engine.hosts import host_from_qemu_flags
from migration_guard.errors import ProxmoxError, UnknownVmError
from migration_guard.service.settings import Settings
from migration_guard.store.cache import (
    FLAGS,
    NODE,
    NODE_VMS,
    NODES,
    PRECONDITION,
    VM,
    VMS,
    Codec,
    FactsCache,
    facts_hash,
)

#: the custom models' cpu-models.conf text, or None (kept as it is)
TEXT: Codec[str | None] = Codec(lambda t: t, lambda t: t)

PRECHECK_OFF = Precondition(checked=False, skipped_reason="the precondition check is turned off")


def _custom_name(cpu: str) -> str:
    """``custom-NAME[,...]`` -> NAME."""
    return cpu.strip().split(",", 1)[0][len("custom-") :]


class ClusterFacts:
    """Reads facts of cluster ``reader.name`` through ``cache``; keeps node facts that did not
    change the same objects, so the verdict caches stay warm across refreshes."""

    def __init__(
        self,
        settings: Settings,
        reader: Any,
        cache: FactsCache,
        pool: ThreadPoolExecutor,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.cluster: str = reader.name
        self.cache = cache
        self.pool = pool
        self.clock = clock
        self.vm_status = VmStatusReader(
            self._run, reader, reuse_s=settings.cache_vm_ttl / 2, list_node=self._node_vms
        )
        self._node_by_hash: dict[str, NodeFacts] = {}
        self._hash_of: dict[int, tuple[NodeFacts, str]] = {}
        self._offline_nodes: dict[str, NodeFacts] = {}
        self._combined: dict[tuple, NodeFacts] = {}
        #: the last VM list seen and its rows by vmid (built once per list, not a scan per check)
        self._vm_index: tuple[Any, dict[int, VmSummary]] = (None, {})

    async def _run(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def _node_vms(self, node: str) -> dict[int, dict]:
        """One node's VM statuses (the node-wide read of a burst) through the cache: processes
        sharing a Redis make one read between them, not one each."""
        rows: dict[int, dict]
        rows, _ = await self.cache.renew(
            f"nodevms:{node}",
            self.settings.cache_vm_ttl / 2,
            lambda: self._run(self.reader.node_vm_statuses, node),
            NODE_VMS,
        )
        return rows

    # ``renew_after`` below: read anew when the value is older than that and wait for the new one
    # (errors raise, no old value instead). The background refresher
    # (shared/migration_guard/service/refresher.py) passes
    # half the lifetime, so a check never finds the value expired.

    def _cached(self, key: str, ttl: float, renew_after: float | None, load: Any, codec: Any) -> Any:
        if renew_after is not None:
            return self.cache.renew(key, renew_after, load, codec)
        return self.cache.get(key, ttl, load, codec)

    async def vm_list(self, renew_after: float | None = None) -> tuple[list[VmSummary], float]:
        got: tuple[list[VmSummary], float] = await self._cached(
            "vms", self.settings.cache_list_ttl, renew_after, lambda: self._run(self.reader.vms), VMS
        )
        return got

    async def node_list(self, renew_after: float | None = None) -> tuple[list[NodeFacts], float]:
        got: tuple[list[NodeFacts], float] = await self._cached(
            "nodes", self.settings.cache_list_ttl, renew_after, lambda: self._run(self.reader.nodes), NODES
        )
        return got

    async def qemu_flags(self, renew_after: float | None = None) -> dict[str, frozenset[str]] | None:
        """Node -> the QEMU flags its KVM offers; None where the cluster has no such report (then
        the CPU is judged on cpuinfo.flags) or, for checks, when it cannot be read now."""
        try:
            flags, _ = await self._cached(
                "cpuflags",
                self.settings.cache_node_ttl,
                renew_after,
                lambda: self._run(self.reader.cluster_cpu_flags),
                FLAGS,
            )
        except ProxmoxError:
            if renew_after is not None:  # the refresher reports it
                raise
            return None
        return flags

    def vm_row(self, vms: list[VmSummary], vmid: int) -> VmSummary | None:
        """The row of ``vmid`` in ``vms`` (a VM list the cache gave) through an index built once
        per list: a cluster of 10,000 VMs is not scanned on every check."""
        seen, index = self._vm_index
        if seen is not vms:
            index = {}
            for row in vms:
                index.setdefault(row.vmid, row)  # the first row wins, as the scan it replaces did
            self._vm_index = (vms, index)
        return index.get(vmid)

    async def find_vm(self, vmid: int, *, fresh: bool = False) -> VmSummary:
        """The VM's row of the VM list. ``fresh``: from a list read within the last second (the
        cached one just proved wrong: the VM was not where it said)."""
        vms, _ = await self.vm_list(renew_after=1.0) if fresh else await self.vm_list()
        row = self.vm_row(vms, vmid)
        if row is None:
            raise UnknownVmError(f"cluster {self.cluster} has no VM {vmid}")
        return row

    async def vm(self, node: str, vmid: int) -> tuple[VmFacts, float]:
        return await self.cache.get(
            f"vm:{vmid}:{node}", self.settings.cache_vm_ttl, lambda: self._load_vm(node, vmid), VM
        )

    def fresh_vm(self, node: str, vmid: int) -> VmFacts | None:
        """The VM's facts when the in-process cache holds them younger than their lifetime (no
        I/O, nothing awaited: the matrix takes 10,000 of them this way)."""
        hit = self.cache.peek(f"vm:{vmid}:{node}")
        if hit is not None and self.clock() - hit[1] < self.settings.cache_vm_ttl:
            value: VmFacts = hit[0]
            return value
        return None

    async def _load_vm(self, node: str, vmid: int) -> VmFacts:
        """Config and status at the same time; the status through ``vm_status``, which reads a
        whole node in one call when many of its VMs are asked together."""
        config_task = asyncio.ensure_future(self._run(self.reader.vm_config, node, vmid))
        try:
            status = await self.vm_status.status(node, vmid)
        except BaseException:
            config_task.cancel()
            await asyncio.gather(config_task, return_exceptions=True)
            raise
        config = await config_task
        vm = vm_facts_from(self.cluster, node, vmid, config, status)
        named = [_custom_name(c) for c in (vm.cpu, vm.pending_cpu) if c and c.strip().startswith("custom-")]
        if named:
            text = await self.custom_models()
            if text is not None and any(f"cpu-model: {n}\n" not in text for n in named):
                # a model created since the list was read: read it again (at most every VM lifetime)
                text = await self.custom_models(renew_after=max(self.settings.cache_vm_ttl, 1.0))
            vm = dataclasses.replace(vm, custom_conf=text)
        return vm

    async def custom_models(self, renew_after: float | None = None) -> str | None:
        """The cluster's custom CPU models (cpu-models.conf text): from Proxmox's
        /cluster/qemu/custom-cpu-models where it exists, else from MIGRATION_GUARD_CPU_MODELS_CONF;
        None when neither gives them (a custom-NAME type is then not judged)."""
        read = getattr(self.reader, "custom_cpu_models", None)
        text: str | None = None
        if read is not None:
            text, _ = await self._cached(
                "custom-models", self.settings.cache_node_ttl, renew_after, lambda: self._run(read), TEXT
            )
        if text is None:
            text = self.settings.cpu_models_text()
        return text

    async def node_status(self, name: str, renew_after: float | None = None) -> tuple[NodeFacts, float]:
        facts, age = await self._cached(
            f"node:{name}",
            self.settings.cache_node_ttl,
            renew_after,
            lambda: self._run(self._read_node, name),
            NODE,
        )
        return self.known(facts), age

    def _read_node(self, name: str) -> NodeFacts:
        """``node_facts`` plus the node's Proxmox release and the CPU types it accepts (read at the
        same time; a reader without ``node_release`` leaves them unknown)."""
        release = getattr(self.reader, "node_release", None)
        if release is None:
            facts: NodeFacts = self.with_width(self.reader.node_facts(name))
            return facts
        other = self.pool.submit(release, name)
        facts = self.with_width(self.reader.node_facts(name))
        try:
            pve, types, source = other.result()
        except ProxmoxError:  # the status was read: the release data stands in for the list
            return facts
        return dataclasses.replace(
            facts, pve_version=facts.pve_version or pve, cpu_types=types, cpu_types_source=source
        )

    def with_width(self, facts: NodeFacts) -> NodeFacts:
        """The node's physical address width, which Proxmox's API does not report: the operator's
        MIGRATION_GUARD_NODE_PHYS_BITS, else the recorded width of the same CPU model."""
        cpu = facts.cpu
        if cpu is None or cpu.phys_bits is not None:
            return facts
        bits = self.settings.phys_bits_by_node.get(facts.name) or phys_bits.recorded_width(
            facts.cpu_model or cpu.model
        )
        if bits is None:
            return facts
        return dataclasses.replace(facts, cpu=dataclasses.replace(cpu, phys_bits=bits))

    def known(self, facts: NodeFacts) -> NodeFacts:
        """Facts that did not change keep their identity (keyed by their hash, computed once per
        object): the verdict cache and the engine's per-host caches stay warm across refreshes."""
        seen = self._hash_of.get(id(facts))
        if seen is not None and seen[0] is facts:
            key = seen[1]
        else:
            key = facts_hash(facts)
            if len(self._hash_of) > 4096:
                self._hash_of.clear()
            self._hash_of[id(facts)] = (facts, key)
        known = self._node_by_hash.get(key)
        if known is None:
            if len(self._node_by_hash) > 4096:
                self._node_by_hash.clear()
            known = self._node_by_hash[key] = facts
        return known

    async def node(self, name: str, *, online: bool | None = None) -> tuple[NodeFacts, float]:
        """Full facts of one node; the CPU from QEMU's own report when the cluster has it."""
        if online is False:
            return NodeFacts(cluster=self.cluster, name=name, online=False, fetched_at=self.clock()), 0.0
        status_task = asyncio.ensure_future(self.node_status(name))
        flags = await self.qemu_flags()
        facts, age = await status_task
        return self.with_flags(facts, flags), age

    def with_flags(self, facts: NodeFacts, flags: dict[str, frozenset[str]] | None) -> NodeFacts:
        offered = flags.get(facts.name) if flags else None
        if not offered or not facts.online:
            return facts
        key = (id(facts), offered)
        hit = self._combined.get(key)
        if hit is not None:
            return hit
        known = facts.cpu  # the node status' CPU: its vendor and family (from cpuinfo) carry over
        cpu = host_from_qemu_flags(
            facts.name,
            facts.cpu_model,
            offered,
            known.vendor if known is not None else None,
            known.family if known is not None else None,
            known.phys_bits if known is not None else None,
        )
        combined = dataclasses.replace(facts, cpu=cpu, flag_source="qemu-kvm")
        if len(self._combined) > 4096:
            self._combined.clear()
        self._combined[key] = combined
        return combined

    def offline(self, name: str) -> NodeFacts:
        facts = self._offline_nodes.get(name)
        if facts is None:
            facts = self._offline_nodes[name] = NodeFacts(cluster=self.cluster, name=name, online=False)
        return facts

    async def ha(self) -> HaConfig:
        """HA's resources and where it may put them, read now (rules or groups: cluster/ha.py); a
        reader without HA (the in-memory one) has none."""
        read = getattr(self.reader, "ha_config", None)
        if read is None:
            return HaConfig("none", {})
        config: HaConfig = await self._run(read)
        return config

    async def precondition(self, node: str, vmid: int, target: str) -> Precondition:
        """Proxmox's own precondition check toward ``target``: one call per VM answers every target."""
        if not self.settings.precheck:
            return PRECHECK_OFF
        try:
            pre, _ = await self.cache.get(
                f"pre:{vmid}:{node}",
                self.settings.cache_vm_ttl,
                lambda: self._run(self.reader.migrate_precondition, node, vmid),
                PRECONDITION,
            )
        except ProxmoxError as exc:
            return Precondition(
                checked=False, skipped_reason=f"Proxmox's own precondition check failed: {exc}"
            )
        return pre.toward(target)
