"""HA recovery risks (``GET /v1/ha/risks``): HA starts a VM on another node after a node failure
(and moves it on a relocate or a maintenance) without any hookscript asking the guard; a CPU type
that node cannot run means the VM stays down exactly when it is needed. For each HA-managed VM that
HA starts again (requested state ``started``), every node HA may start it on is judged with the
service's own verdict (``check``, without Proxmox's migrate precondition, which a recovery does
not run); the nodes that deny (or cannot be judged: ``unknown``) are its risks.

HA's configuration that cannot be read is an error answer (never an empty list, which would read
as "no risks"); the gauge ``migration_guard_ha_risks`` keeps its last value then. ``/metrics``
renews the answer every few minutes, so the gauge does not depend on anyone asking."""

from __future__ import annotations

import asyncio
from typing import Any

from migration_guard.cluster.ha import HaResource
from migration_guard.engine.facts import VmSummary
from migration_guard.errors import GuardError
from migration_guard.service.evacuation import target_of
from migration_guard.service.latest import Latest
from migration_guard.store.events import iso_utc


class HaRisks:
    def __init__(self, service: Any) -> None:
        self.service = service
        #: the latest answer (GET /v1/ha/risks keeps it; /metrics renews it every few minutes)
        self.latest = Latest(self._risks, service.clock)

    async def risks(self) -> dict:
        return await self.latest.run()

    async def _risks(self) -> dict:
        service = self.service
        ha = await service.facts.ha()
        risks: list[dict] = []
        if ha.resources:
            (nodes, _), (vms, _) = await asyncio.gather(service.node_list(), service.vm_list())
            every = [n.name for n in nodes]
            where = {v.vmid: v for v in vms}
            rows = await asyncio.gather(
                *(
                    self._vm(res, where[vmid], every)
                    for vmid, res in sorted(ha.resources.items())
                    if res.recovered and vmid in where
                )
            )
            risks = [r for r in rows if r is not None]
        service.metrics.ha_risks = len(risks)
        return {
            "cluster": service.cluster,
            "source": ha.source,
            "ha_vms": len(ha.resources),
            "risks": risks,
            "checked_at": iso_utc(service.clock()),
        }

    async def _vm(self, res: HaResource, vm: VmSummary, every: list[str]) -> dict | None:
        candidates = res.recovery_nodes(vm.node, every)
        outcomes = await asyncio.gather(
            *(self.service.check(vm.vmid, n, vm.node, precheck=False) for n, _ in candidates),
            return_exceptions=True,
        )
        nodes, cpu = [], ""
        for (node, fallback), outcome in zip(candidates, outcomes, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, GuardError):
                raise outcome
            if not isinstance(outcome, GuardError):
                cpu = cpu or outcome.body.get("cpu", "")
            target = target_of(node, outcome)
            if target["verdict"] == "allow":
                continue
            message = target["message"]
            if fallback:
                message += f" (HA uses {node} only when none of the rule's nodes is online)"
            nodes.append(
                {
                    "node": node,
                    "verdict": target["verdict"],
                    "reason": target["code"],
                    "message": message,
                    "fallback": fallback,
                }
            )
        if not nodes:
            return None
        return {
            "vmid": vm.vmid,
            "name": vm.name,
            "node": vm.node,
            "cpu": cpu or None,
            "ha_state": res.state,
            "rule_or_group": res.rule or None,
            "strict": res.strict,
            "nodes": nodes,
        }
