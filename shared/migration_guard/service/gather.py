"""One check's facts gathered and judged, on one path: ``Gatherer.gather`` first peeks every fact
in the in-process L1 and answers at once, awaiting nothing, when all are fresh (a warm check
touches no network); else it loads the facts the L1 lacks, all at once, within the caller's time
budget. The relocation rules (the VM moved, the target is back online, the source guessed from
the last VM list), staleness (every fact's age against its own lifetime) and the ``unknown``
verdicts of an unreachable Proxmox are here, once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from migration_guard.engine.checks import Verdict, verdict_body
from migration_guard.engine.facts import NodeFacts, Precondition, VmFacts
from migration_guard.engine.verdicts import Reason
from migration_guard.errors import InputError, UnknownNodeError, UnknownVmError
from migration_guard.service.facts import PRECHECK_OFF, ClusterFacts
from migration_guard.service.outcome import UNREACHABLE, Outcome, _judge, _prefix_of, unknown_outcome
from migration_guard.store.events import iso_utc


def answer_within(budget_s: float) -> float:
    """Seconds the service may spend on Proxmox for a caller with ``budget_s`` left: what remains
    after the answer's way back (a fifth, at least 0.25 s)."""
    return max(0.05, budget_s - max(0.25, budget_s / 5))


def _read_error(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


def _result(task: asyncio.Future) -> Any:
    exc = task.exception()
    if exc is not None:
        raise exc
    return task.result()


class _Loads:
    """The reads of one check that the L1 could not answer, started at once; each waits only for
    what it needs (the VM's node before its config)."""

    def __init__(self, facts: ClusterFacts, vmid: int, target: str, guess: str | None, precheck: bool):
        self.facts, self.vmid, self.target, self.guess = facts, vmid, target, guess
        self.where = asyncio.ensure_future(self._where())
        self.vm = asyncio.ensure_future(self._locate())
        self.nodes = asyncio.ensure_future(facts.node_list())
        self.flags = asyncio.ensure_future(facts.qemu_flags())
        self.target_node = asyncio.ensure_future(self._target())
        self.source_node = asyncio.ensure_future(self._source())
        self.pre = asyncio.ensure_future(self._pre(precheck))

    def all(self) -> tuple[asyncio.Future, ...]:
        return (self.where, self.vm, self.nodes, self.flags, self.target_node, self.source_node, self.pre)

    def named(self) -> dict[asyncio.Future, str]:
        return {
            self.vm: f"the config and status of VM {self.vmid}",
            self.where: "the VM list",
            self.nodes: "the node list",
            self.flags: "the cluster CPU flags",
            self.target_node: f"the status of node {self.target}",
            self.source_node: "the status of the VM's node",
            self.pre: "Proxmox's own precondition check",
        }

    async def _where(self) -> str:
        return self.guess if self.guess is not None else (await self.facts.find_vm(self.vmid)).node

    async def _locate(self) -> tuple[VmFacts, float]:
        name = await self.where
        try:
            return await self.facts.vm(name, self.vmid)
        except UnknownVmError:
            if self.guess is None:
                raise
        # the VM is not where the caller or the last VM list said (it moved): ask the cluster
        summary = await self.facts.find_vm(self.vmid, fresh=True)
        return await self.facts.vm(summary.node, self.vmid)

    async def _target(self) -> tuple[NodeFacts, float] | None:
        """None when the last node list says the target is offline: not asked (595 anyway)."""
        known = self.facts.cache.peek("nodes")
        if known is not None and any(n.name == self.target and not n.online for n in known[0]):
            return None
        return await self.facts.node_status(self.target)

    async def _source(self) -> tuple[NodeFacts, float]:
        return await self.facts.node_status(await self.where)

    async def _pre(self, precheck: bool) -> Precondition | None:
        name = await self.where
        if not precheck or name == self.target:
            return None
        return await self.facts.precondition(name, self.vmid, self.target)


class Gatherer:
    """Gathers the facts of one check (``gather``) and judges them (memoised verdicts)."""

    def __init__(self, facts: ClusterFacts, verdict_memo_cap: int) -> None:
        self.facts = facts
        self.settings = facts.settings
        self.cluster = facts.cluster
        self.clock = facts.clock
        self.memo_cap = verdict_memo_cap
        self._warm_memo: dict[tuple, tuple[float, Verdict, float, bytes]] = {}
        self._verdicts: dict[tuple, tuple[Verdict, NodeFacts, NodeFacts, bytes]] = {}

    def gather(
        self, vmid: int, target: str, source: str | None, precheck: bool, budget_s: float | None
    ) -> Outcome | Awaitable[Outcome]:
        """The outcome at once when every fact is fresh in the L1, else an awaitable that loads the
        missing ones (``budget_s``: the caller's time left; ``unknown`` naming what did not come)."""
        now = self.clock()
        memo_key = (vmid, target, source, precheck)
        memo = self._warm_memo.get(memo_key)
        if memo is not None and now < memo[0]:
            return Outcome(memo[1], checked_at=iso_utc(now), age=now - memo[2], prefix=memo[3])
        warm = self._peek(vmid, target, source, precheck, now)
        if warm is not None:
            outcome, fresh_for = warm
            if outcome.verdict is not None and outcome._prefix is not None:
                if len(self._warm_memo) > self.memo_cap:
                    self._warm_memo.clear()
                oldest = now - outcome.age
                self._warm_memo[memo_key] = (now + fresh_for, outcome.verdict, oldest, outcome._prefix)
            return outcome
        deadline = None if budget_s is None else time.monotonic() + answer_within(budget_s)
        return self._load(vmid, target, source, precheck, deadline)

    def _fresh(self, key: str, ttl: float, now: float, ages: list[tuple[float, float]]) -> Any:
        """The L1's value of ``key`` when younger than ``ttl`` (its (age, ttl) joins ``ages``)."""
        hit = self.facts.cache.peek(key)
        if hit is not None and now - hit[1] < ttl:
            ages.append((now - hit[1], ttl))
            return hit[0]
        return None

    def _peek(
        self, vmid: int, target: str, source: str | None, precheck: bool, now: float
    ) -> tuple[Outcome, float] | None:
        """The whole check from fresh L1 facts, awaiting nothing, and how long all of them stay
        fresh; None when some fact is not fresh."""
        s = self.settings
        ages: list[tuple[float, float]] = []  # (age, lifetime) of every fact used
        if source is None:
            vms = self._fresh("vms", s.cache_list_ttl, now, ages)
            row = self.facts.vm_row(vms, vmid) if vms is not None else None
            if row is None:
                return None
            source = row.node
        vm = self._fresh(f"vm:{vmid}:{source}", s.cache_vm_ttl, now, ages)
        nodes = self._fresh("nodes", s.cache_list_ttl, now, ages)
        flags = self._fresh("cpuflags", s.cache_node_ttl, now, ages)
        if vm is None or nodes is None or flags is None:
            return None
        online = {n.name: n.online for n in nodes}
        if target not in online or source not in online:
            return None
        pair = []
        for name in (source, target):
            if not online[name]:
                pair.append(self.facts.offline(name))
                continue
            hit = self._fresh(f"node:{name}", s.cache_node_ttl, now, ages)
            if hit is None:
                return None
            pair.append(self.facts.with_flags(self.facts.known(hit), flags))
        pre = None
        if precheck and online[target] and source != target:
            if not s.precheck:
                pre = PRECHECK_OFF
            else:
                hit = self._fresh(f"pre:{vmid}:{source}", s.cache_vm_ttl, now, ages)
                if hit is None:
                    return None
                pre = hit.toward(target)
        return self._outcome(vm, pair[0], pair[1], pre, ages, now), min(t - a for a, t in ages)

    async def _load(
        self, vmid: int, target: str, source: str | None, precheck: bool, deadline: float | None
    ) -> Outcome:
        guess = source if source is not None else self._last_known_node(vmid)
        loads = _Loads(self.facts, vmid, target, guess, precheck)
        if deadline is None:
            await asyncio.gather(*loads.all(), return_exceptions=True)
        else:
            _, late = await asyncio.wait(loads.all(), timeout=max(0.0, deadline - time.monotonic()))
            if late:
                for task in late:  # they go on (their facts land in the cache); errors are read
                    task.add_done_callback(_read_error)
                named = loads.named()
                return self._too_slow(vmid, target, source, [named[t] for t in loads.all() if t in late])
        now = self.clock()
        if source is not None and loads.nodes.exception() is None:
            names = {n.name for n in loads.nodes.result()[0]}
            if source not in names:  # the caller's source is no node: not a Proxmox fault (502)
                raise UnknownNodeError(
                    f"cluster {self.cluster} has no node {source} (the source given); "
                    f"its nodes are {', '.join(sorted(names))}"
                )
        try:
            vm, vm_age = _result(loads.vm)
            nodes, nodes_age = _result(loads.nodes)
        except UNREACHABLE as exc:
            return self._unknown(vmid, target, source, now, exc=exc)
        online = {n.name: n.online for n in nodes}
        if target not in online:
            raise UnknownNodeError(
                f"cluster {self.cluster} has no node {target}; its nodes are {', '.join(sorted(online))}"
            )
        s = self.settings
        ages = [(vm_age, s.cache_vm_ttl), (nodes_age, s.cache_list_ttl)]
        try:
            pair = [
                await self._node_of(loads, loads.source_node, vm.node, online, ages),
                await self._node_of(loads, loads.target_node, target, online, ages),
            ]
        except UNREACHABLE as exc:
            return self._unknown(vmid, target, vm.node, now, exc=exc, vm=vm)
        found: Precondition | None = None
        if precheck and online[target] and vm.node != target:
            found = loads.pre.result() if loads.pre.exception() is None else None
            if found is None or (guess is not None and guess != vm.node):
                found = await self.facts.precondition(vm.node, vmid, target)
        return self._outcome(vm, pair[0], pair[1], found, ages, now)

    async def _node_of(
        self,
        loads: _Loads,
        task: asyncio.Future,
        name: str,
        online: dict[str, bool],
        ages: list[tuple[float, float]],
    ) -> NodeFacts:
        """The facts of the VM's node or the target (``name``) from what was loaded; read anew when
        the VM is not where the caller or the last VM list said, or the target is back online since
        the last node list. Its (age, lifetime) joins ``ages``."""
        if not online.get(name, False):
            return self.facts.offline(name)
        moved = task is loads.source_node and name != loads.where.result()
        back = task is loads.target_node and task.exception() is None and task.result() is None
        if moved or back:
            facts, age = await self.facts.node_status(name)
        else:
            facts, age = _result(task)
        ages.append((age, self.settings.cache_node_ttl))
        flags = loads.flags.result() if loads.flags.exception() is None else None
        return self.facts.with_flags(facts, flags)

    def _last_known_node(self, vmid: int) -> str | None:
        """Where the last VM list, however old, put the VM: a guess that costs no round trip.
        Reading the VM's config there proves it (a config exists only on the VM's node)."""
        known = self.facts.cache.peek("vms")
        if known is None:
            return None
        row = self.facts.vm_row(known[0], vmid)
        return row.node if row is not None else None

    def _outcome(
        self,
        vm: VmFacts,
        source: NodeFacts,
        target: NodeFacts,
        pre: Precondition | None,
        ages: list[tuple[float, float]],
        now: float,
    ) -> Outcome:
        """The verdict from these facts (memoised while they stay the same objects); stale when some
        fact is older than its own lifetime (``ages``: (age, lifetime) of every fact used)."""
        if vm.node == target.name:
            raise InputError(f"VM {vm.vmid} already runs on {target.name}: pick another target node")
        verdict, prefix = self._verdict(vm, source, target, pre)
        age = max(a for a, _ in ages)
        if not any(a > ttl for a, ttl in ages):
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

    def _verdict(
        self, vm: VmFacts, source: NodeFacts, target: NodeFacts, pre: Precondition | None
    ) -> tuple[Verdict, bytes]:
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
            vm.custom_conf,  # the custom models read with it (a model created or changed since)
            id(source),
            source.online,
            id(target),
            target.online,
            pre_key,
        )
        hit = self._verdicts.get(key)
        if hit is not None and hit[1] is source and hit[2] is target:
            return hit[0], hit[3]
        verdict = _judge(vm, source, target, pre)
        if len(self._verdicts) > self.memo_cap:
            self._verdicts.clear()
        prefix = _prefix_of(verdict)
        self._verdicts[key] = (verdict, source, target, prefix)
        return verdict, prefix

    def _unknown(
        self,
        vmid: int,
        target: str,
        source: str | None,
        now: float,
        *,
        exc: BaseException | None = None,
        reason: Reason | None = None,
        vm: VmFacts | None = None,
    ) -> Outcome:
        return unknown_outcome(
            vmid,
            target,
            iso_utc(now),
            exc=exc,
            reason=reason,
            vm=vm,
            source=source or "",
            source_cluster=self.cluster,
            target_cluster=self.cluster,
        )

    def _too_slow(self, vmid: int, target: str, source: str | None, waiting: list[str]) -> Outcome:
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
        return self._unknown(vmid, target, source, self.clock(), reason=reason)
