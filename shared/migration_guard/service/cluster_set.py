"""Questions that span the clusters one service reads: ``ClusterSet`` (cross-cluster checks,
targets in every cluster, the remote decision found by the VM's smbios uuid). The clusters
themselves (endpoints, the clusters file) are in ``migration_guard.service.clusters``."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from migration_guard.engine.checks import evaluate, verdict_body
from migration_guard.engine.facts import NodeFacts, Precondition, VmFacts
from migration_guard.errors import (
    ConfigError,
    GuardError,
    InputError,
    ProxmoxUnreachable,
    UnknownClusterError,
    UnknownNodeError,
    UnknownVmError,
)
from migration_guard.service.clusters import how_to_add, load_clusters_file, reader_for
from migration_guard.service.outcome import UNREACHABLE, Outcome, unknown_outcome
from migration_guard.store.events import iso_utc

log = logging.getLogger("migration_guard.clusters")

#: why a cross-cluster verdict carries no Proxmox precondition check
CROSS_PRECHECK = (
    "Proxmox's own storage and local-resource check covers one cluster only; qm remote-migrate "
    "maps storage and bridges itself (--target-storage, --target-bridge)"
)


class ClusterSet:
    """Every cluster one service reads: its own (``home``, the default cluster) and those of
    MIGRATION_GUARD_CLUSTERS_FILE, each a GuardService with its own reader and cache namespace,
    all sharing the home's store. Answers the questions that span clusters: a check whose source
    and target are in different clusters, targets in every cluster, and the remote (cross-cluster)
    decision the target's hookscript asks for, where the VM is found by its smbios1 uuid."""

    def __init__(self, home, others: dict | None = None) -> None:
        self.home = home
        self.services = {home.cluster: home}
        if others is None:
            others = self._from_settings(home)
        for name, service in others.items():
            if name in self.services:
                raise ConfigError(
                    f"cluster {name!r} appears twice (MIGRATION_GUARD_PVE_CLUSTER_NAME names the default one)"
                )
            self.services[name] = service
        #: smbios uuid -> (cluster, node, vmid) of the last VM seen with it (tried before a scan)
        self._uuid_seen: dict[str, tuple[str, str, int]] = {}

    @staticmethod
    def _from_settings(home) -> dict:
        """One service per cluster of MIGRATION_GUARD_CLUSTERS_FILE: the home's siblings (same
        settings, store and clock, their own reader)."""
        path = getattr(home.settings, "clusters_file", "") or ""
        if not path:
            return {}
        out = {}
        for endpoint in load_clusters_file(path, default_timeout=home.settings.pve_timeout):
            if endpoint.verify_ssl is False:
                log.warning(
                    "%s: cluster %s has verify_ssl = false: its certificate is not checked, so anyone "
                    "on the path can pose as its Proxmox; give the path of its CA file instead",
                    path,
                    endpoint.name,
                )
            out[endpoint.name] = home.sibling(reader_for(endpoint, home.settings))
        return out

    @property
    def names(self) -> list[str]:
        return list(self.services)

    def service(self, name: str | None):
        if not name:
            return self.home
        found = self.services.get(name)
        if found is None:
            raise UnknownClusterError(
                f"the service reads no cluster {name!r} (it reads {', '.join(self.services)}): "
                + how_to_add(name)
            )
        return found

    async def close(self) -> None:
        for service in self.services.values():
            if service is not self.home:
                service.pool.shutdown(wait=False, cancel_futures=True)

    # --- one verdict across clusters ---------------------------------------------------------

    async def check(
        self,
        vmid: int,
        target: str,
        target_cluster: str | None = None,
        source_cluster: str | None = None,
        source: str | None = None,
    ):
        src, dst = self.service(source_cluster), self.service(target_cluster)
        if src is dst:
            return await src.check(vmid, target, source)
        try:
            vm, age = await self._locate(src, vmid, source)
        except UNREACHABLE as exc:
            return self._unreachable(vmid, target, src.cluster, dst.cluster, exc, source=source or "")
        return await self.judge(vm, src, dst, target, vm_age=age)

    async def _locate(self, service, vmid: int, source: str | None) -> tuple[VmFacts, float]:
        if source:
            # as on the same-cluster path: a source that is no node is the caller's mistake (404)
            names = {n.name for n in (await service.node_list())[0]}
            if source not in names:
                raise UnknownNodeError(
                    f"cluster {service.cluster} has no node {source} (the source given); "
                    f"its nodes are {', '.join(sorted(names))}"
                )
            try:
                return await service.vm(source, vmid)
            except ProxmoxUnreachable:
                raise
            except GuardError:
                pass  # the VM moved: ask the cluster where it runs now
        summary = await service.find_vm(vmid)
        return await service.vm(summary.node, vmid)

    async def judge(self, vm: VmFacts, src, dst, target: str, *, vm_age: float = 0.0):
        """The verdict for moving ``vm`` (read in cluster ``src``) to node ``target`` of cluster
        ``dst``."""
        now = dst.clock()
        source_cluster = src.cluster
        try:
            nodes, nodes_age = await dst.node_list()
        except UNREACHABLE as exc:
            return self._unreachable(vm.vmid, target, source_cluster, dst.cluster, exc, vm=vm)
        online = {n.name: n.online for n in nodes}
        if target not in online:
            raise UnknownNodeError(
                f"cluster {dst.cluster} has no node {target}; its nodes are {', '.join(sorted(online))}"
            )
        if src is dst and vm.node == target:
            raise InputError(f"VM {vm.vmid} already runs on {target}: pick another target node")
        jobs = [dst.node(target, online=online[target]), self._source_node(src, vm.node)]
        got = await asyncio.gather(*jobs, return_exceptions=True)
        for item in got:
            if isinstance(item, UNREACHABLE):
                return self._unreachable(vm.vmid, target, source_cluster, dst.cluster, item, vm=vm)
            if isinstance(item, BaseException):
                raise item
        # every item is a (facts, age) pair now: the loop above raised or returned on exceptions
        target_facts, target_age = cast("tuple[NodeFacts, float]", got[0])
        s = dst.settings
        # (age, lifetime) of every fact used: stale when any is older than its own lifetime
        ages = [(vm_age, s.cache_vm_ttl), (nodes_age, s.cache_list_ttl), (target_age, s.cache_node_ttl)]
        source_facts, source_age = cast("tuple[NodeFacts | None, float]", got[1])
        ages.append((source_age, s.cache_node_ttl))
        pre = Precondition(checked=False, skipped_reason=CROSS_PRECHECK)
        if source_facts is not None and source_facts.online:
            verdict = evaluate(vm, source_facts, target_facts, pre)
        else:
            verdict = evaluate(vm, source_facts, target_facts, pre, source_known=False)
        age = max(a for a, _ in ages)
        body = verdict_body(verdict, checked_at=iso_utc(now), facts_age_s=age)
        body["stale"] = any(a > ttl for a, ttl in ages)
        if body["stale"]:
            body["reasons"].append(
                {
                    "code": "stale-facts",
                    "message": f"answered from facts {age:.0f} s old: Proxmox did not answer in time",
                }
            )
        return Outcome(verdict=verdict, body=body)

    async def _source_node(self, service, name: str):
        nodes, _ = await service.node_list()
        online = {n.name: n.online for n in nodes}
        if not online.get(name, False):
            return NodeFacts(cluster=service.cluster, name=name, online=False), 0.0
        return await service.node(name)

    def _unreachable(
        self,
        vmid: int,
        target: str,
        source_cluster: str,
        target_cluster: str,
        exc: Exception,
        *,
        vm: VmFacts | None = None,
        source: str = "",
    ) -> Outcome:
        return unknown_outcome(
            vmid,
            target,
            iso_utc(self.home.clock()),
            exc=exc,
            vm=vm,
            source=source,
            source_cluster=source_cluster,
            target_cluster=target_cluster,
        )

    # --- many verdicts -------------------------------------------------------------------------

    async def targets(self, vmid: int, source_cluster: str | None = None) -> dict:
        """Every node of every cluster the service reads, as targets of VM ``vmid``."""
        src = self.service(source_cluster)
        body = await src.targets(vmid)
        for entry in body["targets"]:
            entry.setdefault("target_cluster", src.cluster)
        vm, age = await self._locate(src, vmid, body.get("source"))
        errors = []
        for name, dst in self.services.items():
            if dst is src:
                continue
            try:
                nodes, _ = await dst.node_list()
            except GuardError as exc:
                errors.append({"cluster": name, "code": exc.code, "message": str(exc)})
                continue
            outcomes = await asyncio.gather(
                *(self.judge(vm, src, dst, n.name, vm_age=age) for n in nodes), return_exceptions=True
            )
            for node, got in zip(nodes, outcomes, strict=True):
                if isinstance(got, GuardError):
                    errors.append({"cluster": name, "node": node.name, "code": got.code, "message": str(got)})
                elif isinstance(got, BaseException):
                    raise got
                else:
                    body["targets"].append(got.body)
        body["source_cluster"] = src.cluster
        body["clusters"] = self.names
        if errors:
            body["errors"] = errors
        return body

    # --- a decision that names clusters (remote-migrate's question) -------------------------------

    async def decide_check(self, request: dict):
        """The verdict for a POST /v1/decisions that names clusters (a remote migration never runs
        the target's hook: this is ``remote-migrate``'s question before it moves the VM)."""
        vmid, target = int(request["vmid"]), str(request["target"])
        src = self.service(request.get("source_cluster"))
        uuid = str(request.get("smbios_uuid") or "").strip().lower()
        if uuid and not request.get("source_cluster"):
            # a guarded remote-migrate names the VM by its uuid too: find it where it lives
            try:
                await src.find_vm(vmid)
            except UnknownVmError:
                found = await self.find_by_uuid(uuid)
                if found is not None:
                    src = self.services[found.cluster]
                    request = {**request, "source": found.node}
                    vmid = found.vmid
        return await self.check(
            vmid, target, request.get("target_cluster"), src.cluster, request.get("source") or None
        )

    async def find_by_uuid(
        self, uuid: str, *, exclude: tuple[str, int] | None = None, vmgenid: str | None = None
    ) -> VmFacts | None:
        """The VM whose config carries ``smbios1: uuid=<uuid>`` in any cluster the service reads
        (``exclude``: (cluster, vmid) of the incoming copy). Several: the one with ``vmgenid``,
        then a running one."""
        uuid = uuid.strip().lower()
        seen = self._uuid_seen.get(uuid)
        if seen is not None and seen[0] in self.services and (seen[0], seen[2]) != exclude:
            try:
                facts, _ = await self.services[seen[0]].vm(seen[1], seen[2])
                if facts.smbios_uuid == uuid and (not vmgenid or facts.vmgenid == vmgenid):
                    return facts
            except GuardError:
                pass
        found: list[VmFacts] = []
        # the source of a live migration runs: read running VMs' configs first, the rest only then
        for running in (True, False):
            scans = await asyncio.gather(
                *(self._scan(s, uuid, exclude, running) for s in self.services.values()),
                return_exceptions=True,
            )
            found = [vm for scan in scans if not isinstance(scan, BaseException) for vm in scan]
            if found:
                break
        if not found:
            return None
        found.sort(
            key=lambda v: (bool(vmgenid) and v.vmgenid == vmgenid, v.status == "running"), reverse=True
        )
        best = found[0]
        self._uuid_seen[uuid] = (best.cluster, best.node, best.vmid)
        return best

    async def _scan(
        self, service, uuid: str, exclude: tuple[str, int] | None, running: bool
    ) -> list[VmFacts]:
        vms, _ = await service.vm_list()
        wanted = [
            v
            for v in vms
            if not v.template and (v.status == "running") == running and (service.cluster, v.vmid) != exclude
        ]
        got = await asyncio.gather(*(service.vm(v.node, v.vmid) for v in wanted), return_exceptions=True)
        out = []
        for item in got:
            if isinstance(item, BaseException):
                continue
            facts = item[0]
            if facts.smbios_uuid:
                self._uuid_seen.setdefault(facts.smbios_uuid, (service.cluster, facts.node, facts.vmid))
            if facts.smbios_uuid == uuid:
                out.append(facts)
        return out
