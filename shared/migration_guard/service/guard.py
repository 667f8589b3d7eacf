"""The service: the facade the API calls (check, targets, decide, the reports, ``across``) and
the wiring of its collaborators: ``ClusterFacts`` (facts through the cache and the cluster
reader, service/facts.py), ``Gatherer`` (one check's facts gathered and judged, gather.py),
``Decisions`` (the hook's decision, its record and veto event, decisions.py) and ``Reports``
(cluster view, recommendation, matrix, reports.py).

A warm check (every fact fresh in the in-process L1) touches no network and awaits nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from migration_guard.engine.facts import NodeFacts, Precondition, VmFacts, VmSummary
from migration_guard.errors import InputError, UnknownNodeError
from migration_guard.service import custom_model
from migration_guard.service.coverage import Coverage
from migration_guard.service.decisions import Decisions
from migration_guard.service.drift import DriftWatch
from migration_guard.service.evacuation import Evacuation
from migration_guard.service.facts import ClusterFacts
from migration_guard.service.gather import Gatherer
from migration_guard.service.ha_risks import HaRisks
from migration_guard.service.metrics import Metrics
from migration_guard.service.outcome import Outcome
from migration_guard.service.reports import Reports
from migration_guard.service.settings import Settings
from migration_guard.store.cache import FactsCache
from migration_guard.store.events import EventLog
from migration_guard.store.overrides import OverrideStore
from migration_guard.store.redis_store import Store


class GuardService:
    #: every cluster this service reads, built on first use by across()
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
            lock_s=settings.pve_timeout + 1.0,
        )
        self.events = EventLog(store, keep=settings.decisions_keep)
        self.pool = ThreadPoolExecutor(max_workers=settings.proxmox_workers, thread_name_prefix="proxmox")
        self.facts = ClusterFacts(settings, reader, self.cache, self.pool, clock)
        self.vm_status = self.facts.vm_status
        self.gatherer = Gatherer(self.facts, settings.verdict_memo_cap)
        self.overrides = OverrideStore(store, clock)
        self.decisions = Decisions(
            self.cluster, store, self.events, self.metrics, clock, self._decision_check, self.overrides
        )
        self.reports = Reports(self.facts)
        self.coverage = Coverage(self)
        self.drift = DriftWatch(self)
        self.evacuations = Evacuation(self)
        self.ha = HaRisks(self)

    async def _run(self, fn: Callable, *args: Any) -> Any:
        """A blocking reader call in the Proxmox thread pool (the API's readiness probe)."""
        return await self.facts._run(fn, *args)

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

    # --- facts (facts.py) ------------------------------------------------------------------------

    async def vm_list(self, renew_after: float | None = None) -> tuple[list[VmSummary], float]:
        return await self.facts.vm_list(renew_after)

    async def node_list(self, renew_after: float | None = None) -> tuple[list[NodeFacts], float]:
        return await self.facts.node_list(renew_after)

    async def qemu_flags(self, renew_after: float | None = None) -> dict[str, frozenset[str]] | None:
        return await self.facts.qemu_flags(renew_after)

    async def find_vm(self, vmid: int, *, fresh: bool = False) -> VmSummary:
        return await self.facts.find_vm(vmid, fresh=fresh)

    async def vm(self, node: str, vmid: int) -> tuple[VmFacts, float]:
        return await self.facts.vm(node, vmid)

    async def node(self, name: str, *, online: bool | None = None) -> tuple[NodeFacts, float]:
        return await self.facts.node(name, online=online)

    async def precondition(self, node: str, vmid: int, target: str) -> Precondition:
        return await self.facts.precondition(node, vmid, target)

    # --- verdicts (gather.py) ----------------------------------------------------------------------

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
            outcome = self.gatherer.gather(vmid, target, source, precheck, budget_s)
            if not isinstance(outcome, Outcome):
                outcome = await outcome
        finally:
            self.metrics.latency.observe(time.perf_counter() - started)
        # from the verdict, not the body: building the body here would undo the serialised-prefix
        # fast path of a warm answer (Outcome.json_bytes)
        self.metrics.verdict(outcome.verdict.verdict if outcome.verdict else outcome.body["verdict"])
        return outcome

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

    # --- the hook's decisions (decisions.py) -------------------------------------------------------

    async def decide(self, request: dict, *, budget_s: float | None = None) -> Outcome:
        return await self.decisions.decide(request, budget_s=budget_s)

    async def _decision_check(self, request: dict, budget_s: float | None) -> Outcome:
        """The verdict a decision records: across clusters when the request names them."""
        if request.get("target_cluster") or request.get("source_cluster"):
            outcome: Outcome = await self.across().decide_check(request)
            return outcome
        # no precondition here: the hook asks at pre-start on the target, after Proxmox's own
        # migrate checks passed (storage, local resources, or the operator's --force). Asked
        # again now, the check fails on the VM's migrate lock, and a local device moved with
        # --force would read as a veto.
        return await self.check(
            int(request["vmid"]),
            str(request["target"]),
            request.get("source") or None,
            precheck=False,
            budget_s=budget_s,
        )

    # --- a node's maintenance and HA (evacuation.py, ha_risks.py) ------------------------------------

    async def evacuation(self, node: str) -> dict:
        return await self.evacuations.evacuation(node)

    async def ha_risks(self) -> dict:
        return await self.ha.risks()

    # --- audited one-time overrides (store/overrides.py) -------------------------------------------

    async def request_override(
        self, vmid: int, target: str, reason: str, ttl_s: int, requested_by: str
    ) -> dict:
        """A pending override of VM ``vmid`` to node ``target`` (both must exist in the cluster)."""
        summary = await self.find_vm(vmid)
        nodes, _ = await self.node_list()
        names = sorted(n.name for n in nodes)
        if target not in names:
            raise UnknownNodeError(
                f"cluster {self.cluster} has no target node by that name; its nodes are {', '.join(names)}"
            )
        if target == summary.node:
            raise InputError(
                f"VM {vmid} already runs on {target}: an override needs another node", code="bad-input"
            )
        return await self.overrides.create(vmid, target, reason, ttl_s, requested_by)

    # --- reports (reports.py) -----------------------------------------------------------------

    async def cluster_view(self) -> dict:
        return await self.reports.cluster_view()

    async def recommendation(self, names: list[str] | None, **what_if: Any) -> dict:
        """``what_if``: ``add``, ``remove``, ``host_data`` (service/whatif.py)."""
        return await self.reports.recommendation(names, **what_if)

    async def matrix(self, *, compact: bool = False) -> dict:
        return await self.reports.matrix(compact=compact)

    async def custom_model(self, names: list[str] | None, name: str) -> dict:
        return (await custom_model.plan(self.reports, names, name))[1]

    async def create_custom_model(self, names: list[str] | None, name: str) -> dict:
        return await custom_model.apply(self.reports, names, name)


def build_service(settings: Settings) -> GuardService:
    """The service for ``settings``: a cluster reader over proxmoxer and the store
    (Redis at ``redis_url``, else the embedded one)."""
    from migration_guard.service.clusters import default_endpoint, reader_for
    from migration_guard.store.redis_store import connect

    settings.require_proxmox()
    reader = reader_for(default_endpoint(settings), settings)
    client, kind = connect(settings.redis_url)
    service = GuardService(settings, reader, Store(client, kind))
    if kind == "redis":  # what waits for Redis survives a restart (the embedded store never waits)
        from migration_guard.store.events import Spool

        # one spool file per worker process (each rewrites its own)
        service.events.attach_spool(Spool.taking_over(settings.state_dir, worker=settings.workers > 1))
    service.across()  # reads MIGRATION_GUARD_CLUSTERS_FILE now: a bad file stops start-up
    return service
