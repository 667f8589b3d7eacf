"""The service layer: gathers facts through the cache and the cluster reader, asks
``checks.evaluate`` for verdicts, records decisions and publishes veto events.

Proxmox calls are blocking (proxmoxer): they run in a thread pool, all facts of one check in
parallel. A warm check (every fact fresh in the in-process L1) touches no network.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from migration_guard.cluster.reader import vm_facts_from
from migration_guard.cluster.vm_status import VmStatusReader
from migration_guard.engine.checks import Verdict, verdict_body
from migration_guard.engine.facts import NodeFacts, Precondition, VmFacts, VmSummary
from migration_guard.engine.hosts import host_from_qemu_flags
from migration_guard.engine.verdicts import Reason
from migration_guard.errors import (
    GuardError,
    InputError,
    NodeUnreachable,
    ProxmoxBadAnswer,
    ProxmoxError,
    ProxmoxUnreachable,
    UnknownNodeError,
    UnknownVmError,
)
from migration_guard.service.metrics import Metrics
from migration_guard.service.outcome import Outcome, _judge, _prefix_of
from migration_guard.service.reports import Reports
from migration_guard.service.settings import Settings
from migration_guard.store.cache import FLAGS, NODE, NODES, PRECONDITION, VM, VMS, FactsCache, facts_hash
from migration_guard.store.events import EventLog, iso_utc, new_id
from migration_guard.store.redis_store import Store
from migration_guard.store.stream import VetoEvent

log = logging.getLogger("migration_guard.service")


def _answer_within(budget_s: float) -> float:
    """Seconds the service may spend on Proxmox for a caller with ``budget_s`` left: what remains
    after the answer's way back (a fifth, at least 0.25 s)."""
    return max(0.05, budget_s - max(0.25, budget_s / 5))


def _read_error(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


_PRECHECK_OFF = Precondition(checked=False, skipped_reason="the precondition check is turned off")

#: vetoes of one VM toward one target count as one run while no gap is longer than this (HA's CRM
#: retries a vetoed migration every round, ~10 s, while the source node is in maintenance)
REPEAT_WINDOW_S = 600.0
REPEAT_KEY = "migration-guard:vetoes:{key}"


def repeat_advice(count: int, first: float, source: str) -> str:
    """What the hook line adds to a veto that repeats: HA keeps trying, and what stops it (the
    line's suggestion, when there is one, names a CPU type both nodes run)."""
    since = time.strftime("%H:%M", time.gmtime(first))
    return (
        f"blocked {count} times since {since} UTC; HA retries until {source or 'the source node'} "
        "leaves maintenance or the CPU type changes: set a CPU type both nodes run and restart "
        "the VM, or migrate it by hand to a node that runs it"
    )


class GuardService:
    #: every cluster this service reads (issue 6), built on first use by across()
    _across: Any = None

    def __init__(
        self, settings: Settings, reader: Any, store: Store, *, clock: Callable[[], float] = time.time
    ):
        self.settings = settings
        self.reader = reader
        self.store = store
        self.cluster = reader.name
        self.clock = clock
        self.metrics = Metrics(reader.stats, self)
        self.cache = FactsCache(
            store,
            namespace=self.cluster,
            stale_grace_s=min(0.25, settings.pve_timeout),
            clock=clock,
            on_hit=self.metrics.hit,
        )
        self.events = EventLog(store, keep=settings.decisions_keep)
        self.pool = ThreadPoolExecutor(max_workers=settings.proxmox_workers, thread_name_prefix="proxmox")
        self.vm_status = VmStatusReader(self._run, reader, reuse_s=settings.cache_vm_ttl / 2)
        self._node_by_hash: dict[str, NodeFacts] = {}
        self._hash_of: dict[int, tuple[NodeFacts, str]] = {}
        self._offline_nodes: dict[str, NodeFacts] = {}
        self._warm_memo: dict[tuple, tuple[float, Verdict, float, bytes]] = {}
        self._combined: dict[tuple, NodeFacts] = {}
        self._verdicts: dict[tuple, tuple[Verdict, NodeFacts, NodeFacts, bytes]] = {}
        #: (source cluster, vmid, target cluster, target) -> (first, count, last): vetoes in a row,
        #: used while Redis is down (Redis keeps them for every service process otherwise)
        self._repeats: dict[tuple, tuple[float, int, float]] = {}
        self.reports = Reports(self)

    # --- plumbing --------------------------------------------------------------------------

    async def _run(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def close(self) -> None:
        if self._across is not None:
            await self._across.close()
        self.cache.cancel()  # background refreshes must not start Proxmox calls after shutdown
        self.pool.shutdown(wait=False, cancel_futures=True)
        await self.store.close()

    def sibling(self, reader: Any) -> GuardService:
        """A service for another cluster: this one's settings, store and clock, its own reader."""
        return GuardService(self.settings, reader, self.store, clock=self.clock)

    def across(self) -> Any:
        """The clusters this service reads: its own (the default) and MIGRATION_GUARD_CLUSTERS_FILE's
        (a ``ClusterSet``: cross-cluster checks and remote decisions)."""
        if self._across is None:
            from migration_guard.service.cluster_set import ClusterSet

            self._across = ClusterSet(self)
        return self._across

    # --- facts -------------------------------------------------------------------------------

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

    async def find_vm(self, vmid: int, *, fresh: bool = False) -> VmSummary:
        """The VM's row of the VM list. ``fresh``: from a list read within the last second (the
        cached one just proved wrong: the VM was not where it said)."""
        vms, _ = await self.vm_list(renew_after=1.0) if fresh else await self.vm_list()
        for vm in vms:
            if vm.vmid == vmid:
                return vm
        raise UnknownVmError(f"cluster {self.cluster} has no VM {vmid}")

    async def vm(self, node: str, vmid: int) -> tuple[VmFacts, float]:
        return await self.cache.get(
            f"vm:{vmid}:{node}", self.settings.cache_vm_ttl, lambda: self._load_vm(node, vmid), VM
        )

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
        return vm_facts_from(self.cluster, node, vmid, config, status)

    async def _node_status(
        self, name: str, renew_after: float | None = None
    ) -> tuple[NodeFacts, float]:
        facts, age = await self._cached(
            f"node:{name}",
            self.settings.cache_node_ttl,
            renew_after,
            lambda: self._run(self._read_node, name),
            NODE,
        )
        return self._known(facts), age

    def _read_node(self, name: str) -> NodeFacts:
        """``node_facts`` plus the node's Proxmox release and the CPU types it accepts (read at the
        same time; a reader without ``node_release`` leaves them unknown)."""
        release = getattr(self.reader, "node_release", None)
        if release is None:
            facts: NodeFacts = self.reader.node_facts(name)
            return facts
        other = self.pool.submit(release, name)
        facts = self.reader.node_facts(name)
        try:
            pve, types, source = other.result()
        except ProxmoxError:  # the status was read: the release data stands in for the list
            return facts
        return dataclasses.replace(
            facts, pve_version=facts.pve_version or pve, cpu_types=types, cpu_types_source=source
        )

    def _known(self, facts: NodeFacts) -> NodeFacts:
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
        status_task = asyncio.ensure_future(self._node_status(name))
        flags = await self.qemu_flags()
        facts, age = await status_task
        return self._with_flags(facts, flags), age

    def _with_flags(self, facts: NodeFacts, flags: dict[str, frozenset[str]] | None) -> NodeFacts:
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
        )
        combined = dataclasses.replace(facts, cpu=cpu, flag_source="qemu-kvm")
        if len(self._combined) > 4096:
            self._combined.clear()
        self._combined[key] = combined
        return combined

    async def precondition(self, node: str, vmid: int, target: str) -> Precondition:
        """Proxmox's own precondition check toward ``target``: one call per VM answers every target."""
        if not self.settings.precheck:
            return _PRECHECK_OFF
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

    # --- one verdict -------------------------------------------------------------------------

    def _fresh(self, key: str, ttl: float, now: float) -> Any:
        hit = self.cache.peek(key)
        if hit is not None and now - hit[1] < ttl:
            return hit
        return None

    def _warm(self, vmid: int, target: str, source: str | None, precheck: bool) -> Outcome | None:
        """The whole check from fresh L1 facts, awaiting nothing; None when some fact is not fresh."""
        s = self.settings
        now = self.clock()
        memo_key = (vmid, target, source, precheck)
        memo = self._warm_memo.get(memo_key)
        if memo is not None and now < memo[0]:
            return Outcome(memo[1], checked_at=iso_utc(now), age=now - memo[2], prefix=memo[3])
        fetched: list[tuple[float, float]] = []  # (fetched_at, ttl) of every fact used
        if source is None:
            vms = self._fresh("vms", s.cache_list_ttl, now)
            if vms is None:
                return None
            fetched.append((vms[1], s.cache_list_ttl))
            source = next((v.node for v in vms[0] if v.vmid == vmid), None)
            if source is None:
                return None
        vm = self._fresh(f"vm:{vmid}:{source}", s.cache_vm_ttl, now)
        nodes = self._fresh("nodes", s.cache_list_ttl, now)
        flags = self._fresh("cpuflags", s.cache_node_ttl, now)
        if vm is None or nodes is None or flags is None:
            return None
        fetched += [(vm[1], s.cache_vm_ttl), (nodes[1], s.cache_list_ttl), (flags[1], s.cache_node_ttl)]
        online = {n.name: n.online for n in nodes[0]}
        if target not in online or source not in online:
            return None
        facts = []
        for name in (source, target):
            if not online[name]:
                facts.append(self._offline(name))
                continue
            hit = self._fresh(f"node:{name}", s.cache_node_ttl, now)
            if hit is None:
                return None
            fetched.append((hit[1], s.cache_node_ttl))
            facts.append(self._with_flags(self._known(hit[0]), flags[0]))
        pre = None
        if precheck and online[target] and source != target:
            if not s.precheck:
                pre = _PRECHECK_OFF
            else:
                hit = self._fresh(f"pre:{vmid}:{source}", s.cache_vm_ttl, now)
                if hit is None:
                    return None
                fetched.append((hit[1], s.cache_vm_ttl))
                pre = hit[0].toward(target)
        oldest = min(f[0] for f in fetched)
        outcome = self._outcome(vm[0], facts[0], facts[1], pre, now - oldest, now)
        if outcome.verdict is not None and outcome._prefix is not None:
            if len(self._warm_memo) > self.settings.verdict_memo_cap:
                self._warm_memo.clear()
            expires = min(at + ttl for at, ttl in fetched)
            self._warm_memo[memo_key] = (expires, outcome.verdict, oldest, outcome._prefix)
        return outcome

    def _offline(self, name: str) -> NodeFacts:
        facts = self._offline_nodes.get(name)
        if facts is None:
            facts = self._offline_nodes[name] = NodeFacts(cluster=self.cluster, name=name, online=False)
        return facts

    async def check(
        self,
        vmid: int,
        target: str,
        source: str | None = None,
        *,
        precheck: bool = True,
        budget_s: float | None = None,
    ) -> Outcome:
        """``budget_s``: the caller's time left (the hook's ``X-Migration-Guard-Budget-Ms``): the
        answer comes before it, ``unknown`` naming the fact Proxmox did not deliver in time."""
        started = time.perf_counter()
        try:
            outcome = self._warm(vmid, target, source, precheck)
            if outcome is None:
                deadline = None if budget_s is None else time.monotonic() + _answer_within(budget_s)
                outcome = await self._cold(vmid, target, source, precheck, deadline)
        finally:
            self.metrics.latency.observe(time.perf_counter() - started)
        # from the verdict, not the body: building the body here would undo the serialised-prefix
        # fast path of a warm answer (Outcome.json_bytes)
        self.metrics.verdict(outcome.verdict.verdict if outcome.verdict else outcome.body["verdict"])
        return outcome

    def _last_known_node(self, vmid: int) -> str | None:
        """Where the last VM list, however old, put the VM: a guess that costs no round trip.
        Reading the VM's config there proves it (a config exists only on the VM's node)."""
        known = self.cache.peek("vms")
        if known is None:
            return None
        return next((v.node for v in known[0] if v.vmid == vmid), None)

    async def _cold(
        self, vmid: int, target: str, source: str | None, precheck: bool, deadline: float | None = None
    ) -> Outcome:
        guess = source if source is not None else self._last_known_node(vmid)

        async def where() -> str:
            return guess if guess is not None else (await self.find_vm(vmid)).node

        where_task = asyncio.ensure_future(where())

        async def locate() -> tuple[VmFacts, float]:
            name = await where_task
            try:
                return await self.vm(name, vmid)
            except UnknownVmError:
                if guess is None:
                    raise
            # the VM is not where the caller or the last VM list said (it moved): ask the cluster
            summary = await self.find_vm(vmid, fresh=True)
            return await self.vm(summary.node, vmid)

        vm_task = asyncio.ensure_future(locate())
        nodes_task = asyncio.ensure_future(self.node_list())
        flags_task = asyncio.ensure_future(self.qemu_flags())
        async def target_facts() -> tuple[NodeFacts, float] | None:
            """None when the last node list says the target is offline: not asked (595 anyway)."""
            known = self.cache.peek("nodes")
            if known is not None and any(n.name == target and not n.online for n in known[0]):
                return None
            return await self._node_status(target)

        target_task = asyncio.ensure_future(target_facts())

        async def source_facts() -> tuple[NodeFacts, float]:
            return await self._node_status(await where_task)

        async def pre() -> Precondition | None:
            name = await where_task
            if not precheck or name == target:
                return None
            return await self.precondition(name, vmid, target)

        source_task = asyncio.ensure_future(source_facts())
        pre_task = asyncio.ensure_future(pre())
        tasks = (where_task, vm_task, nodes_task, flags_task, target_task, source_task, pre_task)
        if deadline is None:
            await asyncio.gather(*tasks, return_exceptions=True)
        else:
            _, late = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
            if late:
                for task in late:  # they go on (their facts land in the cache); errors are read
                    task.add_done_callback(_read_error)
                waiting = {
                    vm_task: f"the config and status of VM {vmid}",
                    where_task: "the VM list",
                    nodes_task: "the node list",
                    flags_task: "the cluster CPU flags",
                    target_task: f"the status of node {target}",
                    source_task: "the status of the VM's node",
                    pre_task: "Proxmox's own precondition check",
                }
                return self._too_slow(
                    vmid, target, source, [waiting[t] for t in tasks if t in late], self.clock()
                )
        now = self.clock()

        def result(task: asyncio.Future) -> Any:
            exc = task.exception()
            if exc is not None:
                raise exc
            return task.result()

        if source is not None and nodes_task.exception() is None:
            names = {n.name for n in nodes_task.result()[0]}
            if source not in names:  # the caller's source is no node: not a Proxmox fault (502)
                raise UnknownNodeError(
                    f"cluster {self.cluster} has no node {source} (the source given); "
                    f"its nodes are {', '.join(sorted(names))}"
                )
        try:
            vm, vm_age = result(vm_task)
            nodes, nodes_age = result(nodes_task)
        except (ProxmoxUnreachable, ProxmoxBadAnswer) as exc:
            return self._unreachable(vmid, target, source, exc, now)
        online = {n.name: n.online for n in nodes}
        if target not in online:
            raise UnknownNodeError(
                f"cluster {self.cluster} has no node {target}; its nodes are {', '.join(sorted(online))}"
            )
        flags = flags_task.result() if flags_task.exception() is None else None
        s = self.settings
        #: (age, lifetime) of every fact used: stale when any is older than its own lifetime
        ages = [(vm_age, s.cache_vm_ttl), (nodes_age, s.cache_list_ttl)]
        node_facts: list[NodeFacts] = []
        for name, task in ((vm.node, source_task), (target, target_task)):
            if not online.get(name, False):
                node_facts.append(self._offline(name))
                continue
            if (task is source_task and name != where_task.result()) or (
                task is target_task and task.exception() is None and task.result() is None
            ):
                # the VM is not where the caller or the last VM list said, or the target is back
                # online since the last node list: that node's facts now
                try:
                    facts, age = await self._node_status(name)
                except (ProxmoxUnreachable, ProxmoxBadAnswer) as err:
                    return self._unreachable(vmid, target, vm.node, err, now, vm=vm)
            else:
                failure = task.exception()
                if isinstance(failure, ProxmoxUnreachable | ProxmoxBadAnswer):
                    return self._unreachable(vmid, target, vm.node, failure, now, vm=vm)
                if failure is not None:
                    raise failure
                got = task.result()
                assert got is not None  # a target not asked (None) is read in the branch above
                facts, age = got
            node_facts.append(self._with_flags(facts, flags))
            ages.append((age, s.cache_node_ttl))
        found: Precondition | None = None
        if precheck and online[target] and vm.node != target:
            found = pre_task.result() if pre_task.exception() is None else None
            if found is None or (guess is not None and guess != vm.node):
                found = await self.precondition(vm.node, vmid, target)
        stale = any(age > ttl for age, ttl in ages)
        return self._outcome(
            vm, node_facts[0], node_facts[1], found, max(a for a, _ in ages), now, stale=stale
        )

    def _outcome(
        self,
        vm: VmFacts,
        source: NodeFacts,
        target: NodeFacts,
        pre: Precondition | None,
        age: float,
        now: float,
        *,
        stale: bool = False,
    ) -> Outcome:
        """``stale``: some fact is older than its own lifetime (``cache_*_ttl``)."""
        if vm.node == target.name:
            raise InputError(f"VM {vm.vmid} already runs on {target.name}: pick another target node")
        pre_key = (
            None
            if pre is None
            else (
                pre.checked,
                pre.skipped_reason,
                pre.local_disks,
                pre.local_resources,
                pre.unavailable_storages,
                pre.unavailable_resources,
            )
        )
        key = (
            vm.cluster,
            vm.vmid,
            vm.node,
            vm.status,
            vm.name,
            vm.tags,
            vm.cpu,
            vm.pending_cpu,
            vm.running_machine,
            id(source),
            source.online,
            id(target),
            target.online,
            pre_key,
        )
        hit = self._verdicts.get(key)
        if hit is not None and hit[1] is source and hit[2] is target:
            verdict, prefix = hit[0], hit[3]
        else:
            verdict = _judge(vm, source, target, pre)
            if len(self._verdicts) > self.settings.verdict_memo_cap:
                self._verdicts.clear()
            prefix = _prefix_of(verdict)
            self._verdicts[key] = (verdict, source, target, prefix)
        if not stale:
            return Outcome(verdict, checked_at=iso_utc(now), age=age, prefix=prefix)
        body = verdict_body(verdict, checked_at=iso_utc(now), facts_age_s=age)
        body["stale"] = True
        body["reasons"].append(
            {
                "code": "stale-facts",
                "message": f"answered from facts {age:.0f} s old (older than their lifetime): "
                "Proxmox did not answer in time",
            }
        )
        return Outcome(verdict, body=body)

    def _unreachable(
        self,
        vmid: int,
        target: str,
        source: str | None,
        exc: GuardError,
        now: float,
        vm: VmFacts | None = None,
        *,
        reason: Reason | None = None,
    ) -> Outcome:
        if reason is not None:
            pass
        elif isinstance(exc, ProxmoxBadAnswer):
            reason = Reason("proxmox-bad-answer", f"Proxmox's answer cannot be judged with: {exc}")
        elif isinstance(exc, NodeUnreachable):
            reason = Reason("node-unreachable", f"no facts about the node to judge with: {exc}")
        else:
            reason = Reason("cluster-unreachable", f"no facts about the cluster to judge with: {exc}")
        verdict = Verdict(
            vmid=vmid,
            name=vm.name if vm else "",
            source=source or (vm.node if vm else ""),
            target=target,
            verdict="unknown",
            reasons=(reason,),
            cpu=(vm.cpu or "kvm64") if vm else "",
            model="",
            suggestion=None,
            flag_source="none",
            source_cluster=self.cluster,
            target_cluster=self.cluster,
        )
        body = verdict_body(verdict, checked_at=iso_utc(now), facts_age_s=0.0)
        body["facts_age_s"] = None
        body["stale"] = False
        return Outcome(verdict, status=503, body=body)

    def _too_slow(
        self, vmid: int, target: str, source: str | None, waiting: list[str], now: float
    ) -> Outcome:
        """``unknown`` before the caller's budget runs out, naming what Proxmox did not deliver."""
        what = ", ".join(waiting)
        hint = (
            f": Proxmox lists {target} online, but a node that is powered off or cut off is answered "
            "only after Proxmox's 30 s proxy timeout; check the node or pick another target"
            if any(target in w for w in waiting)
            else ": Proxmox is slow; the facts are read on in the background, ask again shortly"
        )
        code = "node-unreachable" if any(target in w for w in waiting) else "cluster-unreachable"
        reason = Reason(code, f"Proxmox did not answer in time for {what}{hint}")
        return self._unreachable(vmid, target, source, ProxmoxUnreachable(what), now, reason=reason)

    # --- many verdicts -----------------------------------------------------------------------

    async def targets(self, vmid: int) -> dict:
        summary = await self.find_vm(vmid)
        nodes, _ = await self.node_list()
        others = [n.name for n in nodes if n.name != summary.node]
        outcomes = await asyncio.gather(*(self.check(vmid, name, summary.node) for name in others))
        return {
            "vmid": vmid,
            "name": summary.name,
            "source": summary.node,
            "targets": [o.body for o in outcomes],
        }

    async def decide(self, request: dict, *, budget_s: float | None = None) -> Outcome:
        vmid, target = int(request["vmid"]), str(request["target"])
        try:
            if request.get("target_cluster") or request.get("source_cluster"):
                outcome = await self.across().decide_check(request)
            else:
                # no precondition here: the hook asks at pre-start on the target, after Proxmox's
                # own migrate checks passed (storage, local resources, or the operator's --force).
                # Asked again now, the check fails on the VM's migrate lock, and a local device
                # moved with --force would read as a veto.
                outcome = await self.check(
                    vmid, target, request.get("source") or None, precheck=False, budget_s=budget_s
                )
        except ProxmoxError as exc:
            # Proxmox refused or answered nonsense (HTTP 502): the hook falls back to its fail
            # policy, and the audit log says why no verdict was given
            await self._record_failure(request, exc)
            raise
        body = outcome.body
        verdict = outcome.verdict
        now = self.clock()
        decision_id = new_id(now)
        mode = request.get("mode") or "enforce"
        body["decision_id"] = decision_id
        body["mode"] = mode
        exit_code = verdict.exit_code if verdict else 5
        code = verdict.deny_code if verdict else "cluster-unreachable"
        line = verdict.log_line() if verdict else f"could not judge the migration of VM {vmid} to {target}"
        repeats: tuple[int, float] | None = None
        if body["verdict"] == "deny" and mode == "enforce":
            repeats = await self._count_veto(body, target, now)
            if repeats[0] > 1:
                advice = repeat_advice(repeats[0], repeats[1], body.get("source", ""))
                # before any note: what to do must survive the hook's cut of a long line
                head, sep, notes = line.partition("; note: ")
                line = f"{head}; {advice}{sep}{notes}"
        record = {
            "id": decision_id,
            "time": iso_utc(now),
            "vmid": vmid,
            "name": body.get("name", ""),
            "source": body.get("source", ""),
            "target": target,
            "source_cluster": body.get("source_cluster", self.cluster),
            "target_cluster": body.get("target_cluster", self.cluster),
            "verdict": body["verdict"],
            "code": code,
            "exit": exit_code,
            "mode": mode,
            "cpu": body.get("cpu", ""),
            "reasons": list(body["reasons"]),
            "suggestion": body.get("suggestion"),
            "line": line,
            "facts_age_s": body.get("facts_age_s"),
            "facts": list(body.get("facts") or ()),
            "requested_source": request.get("source"),
            "smbios_uuid": request.get("smbios_uuid"),
            "requested_cpu": request.get("cpu"),
        }
        self.metrics.decisions.labels(body["verdict"]).inc()
        recorded = await self.events.record(record)
        published = True
        if body["verdict"] == "deny":
            reasons = list(body["reasons"]) + list(body.get("facts") or ())  # a nested node: say so
            event: VetoEvent = {
                "id": decision_id,
                "time": record["time"],
                "vmid": vmid,
                "name": record["name"],
                "source": record["source"],
                "target": target,
                "source_cluster": record["source_cluster"],
                "target_cluster": record["target_cluster"],
                "cpu": record["cpu"],
                "verdict": "deny",
                "reasons": reasons,
                "suggestion": record["suggestion"],
                "enforced": mode == "enforce",
            }
            if repeats is not None:  # the Slack message of this VM and target shows the running count
                event["repeat"] = {"count": repeats[0], "since": iso_utc(repeats[1])}
            published = await self.events.publish(event)
        body["event_queued"] = not published
        body["recorded"] = recorded
        if not published:
            body["reasons"].append(
                {
                    "code": "event-queued",
                    "message": "Redis is down: the veto event is kept in memory and sent to Slack "
                    "once Redis is back",
                }
            )
        body["exit"] = exit_code
        body["code"] = code
        body["line"] = line
        return outcome

    async def _record_failure(self, request: dict, exc: GuardError) -> None:
        now = self.clock()
        vmid, target = int(request["vmid"]), str(request["target"])
        line = f"could not judge the migration of VM {vmid} to {target}: {exc}"
        record = {
            "id": new_id(now),
            "time": iso_utc(now),
            "vmid": vmid,
            "name": "",
            "source": request.get("source") or "",
            "target": target,
            "source_cluster": request.get("source_cluster") or self.cluster,
            "target_cluster": request.get("target_cluster") or self.cluster,
            "verdict": "unknown",
            "code": exc.code,
            "exit": 5,
            "mode": request.get("mode") or "enforce",
            "cpu": "",
            "reasons": [{"code": exc.code, "message": str(exc)}],
            "suggestion": None,
            "line": line,
            "facts_age_s": None,
            "requested_source": request.get("source"),
            "smbios_uuid": request.get("smbios_uuid"),
            "requested_cpu": request.get("cpu"),
            "status": 503 if isinstance(exc, ProxmoxUnreachable) else 502,
        }
        self.metrics.decisions.labels("unknown").inc()
        await self.events.record(record)

    async def _count_veto(self, body: dict, target: str, now: float) -> tuple[int, float]:
        """(how many vetoes of this VM toward ``target`` in a row, when the first was): in Redis for
        every service process (its key expires REPEAT_WINDOW_S after the last veto), in memory while
        Redis is down. A gap over REPEAT_WINDOW_S starts anew."""
        parts = (
            body.get("source_cluster") or self.cluster,
            body["vmid"],
            body.get("target_cluster") or self.cluster,
            target,
        )
        key = REPEAT_KEY.format(key=":".join(str(p) for p in parts))

        async def bump(r: Any) -> Any:
            # one round trip, no WATCH: a burst of decisions (a node evacuation) must not queue on
            # the connection pool; the run ends when the key expires (REPEAT_WINDOW_S after the last)
            pipe = r.pipeline(transaction=True)
            pipe.hincrby(key, "count", 1)
            pipe.hsetnx(key, "first", repr(now))
            pipe.hget(key, "first")
            pipe.pexpire(key, int(REPEAT_WINDOW_S * 1000))
            return await pipe.execute()

        try:
            count, _, first, _ = await self.store.run(bump)
            return int(count), float(first)
        except Exception:  # noqa: BLE001 - Redis down or odd: the count, never the decision, suffers
            seen = self._repeats.get(parts)
            if seen is None or now - seen[2] > REPEAT_WINDOW_S:
                seen = (now, 0, now)
            seen = (seen[0], seen[1] + 1, now)
            if len(self._repeats) > 10_000:
                self._repeats.clear()
            self._repeats[parts] = seen
            return seen[1], seen[0]

    # --- reports (reports.py) -----------------------------------------------------------------

    async def cluster_view(self) -> dict:
        return await self.reports.cluster_view()

    async def recommendation(self, names: list[str] | None) -> dict:
        return await self.reports.recommendation(names)

    async def matrix(self) -> dict:
        return await self.reports.matrix()


def build_service(settings: Settings) -> GuardService:
    """The service for ``settings``: a cluster reader over proxmoxer and the store
    (Redis at ``redis_url``, else the embedded one)."""
    from migration_guard.service.clusters import default_endpoint, reader_for
    from migration_guard.store.redis_store import connect

    settings.require_proxmox()
    reader = reader_for(default_endpoint(settings))
    client, kind = connect(settings.redis_url)
    service = GuardService(settings, reader, Store(client, kind))
    if kind == "redis":  # what waits for Redis survives a restart (the embedded store never waits)
        from migration_guard.store.events import Spool

        service.events.attach_spool(Spool(settings.state_dir))
    service.across()  # reads MIGRATION_GUARD_CLUSTERS_FILE now: a bad file stops start-up
    return service
