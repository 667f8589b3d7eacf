"""The drift alarm of one cluster: after every inventory refresh (service/refresher.py) each online
node's CPU facts are compared with the last ones stored (store/drift.py). A change becomes a drift
event: recorded for ``GET /v1/drift``, published on the event stream (the bot posts it once) and
counted in ``migration_guard_drift_events_total{node}``.

First sight of a node is its baseline, not drift; an offline node (a reboot) is not compared, and
comes back with the same facts as no drift; flags that switch source (cpuinfo -> the KVM view
after an upgrade to pve-manager 9.1.15+) are a new baseline, logged. While Redis is down nothing
is compared (the facts are not stored either): the next round after it returns compares."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import Counter

from migration_guard.engine.drift import Moved, comparable, compare, facts_before, fingerprint, impact
from migration_guard.engine.facts import NodeFacts
from migration_guard.errors import GuardError, StoreUnavailable
from migration_guard.store.drift import DriftStore
from migration_guard.store.events import iso_utc, new_id
from migration_guard.store.stream import DRIFT_KIND, DriftEvent

log = logging.getLogger("migration_guard.drift")


def _moved(m: Moved) -> dict[str, Any]:
    out: dict[str, Any] = {
        "vmid": m.vmid,
        "name": m.name,
        "cpu": m.cpu,
        "direction": m.direction,
        "node": m.other,
    }
    if m.reason:
        out["reason"] = m.reason
    return out


class DriftWatch:
    """Compares a service's node facts with the stored ones; ``observe`` once per refresh."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.store = DriftStore(service.store, service.cluster)
        self.counter = Counter(
            "migration_guard_drift_events",
            "Drift events (a node's CPU facts changed), by node",
            ["node"],
            registry=service.metrics.registry,
        )
        self._store_down = False

    async def _online_facts(self) -> dict[str, NodeFacts]:
        nodes, _ = await self.service.node_list()
        got = await asyncio.gather(
            *(self.service.node(n.name) for n in nodes if n.online), return_exceptions=True
        )
        out = {}
        for g in got:
            if isinstance(g, GuardError):  # that node is not compared this round
                continue
            if isinstance(g, BaseException):
                raise g
            out[g[0].name] = g[0]
        return out

    async def observe(self) -> list[DriftEvent]:
        """Compare every online node once; returns the drift events of this round. Raises nothing
        for a store outage (logged once; the next round compares)."""
        try:
            nodes = await self._online_facts()
            prints = {name: fp for name, n in nodes.items() if (fp := fingerprint(n)) is not None}
            last = await self.store.last(sorted(prints))
            events = []
            for name in sorted(prints):
                event = await self._one(name, prints[name], last.get(name), nodes)
                if event is not None:
                    events.append(event)
        except StoreUnavailable as exc:
            if not self._store_down:
                log.warning(
                    "drift of cluster %s not compared: %s; compared again once Redis answers",
                    self.service.cluster,
                    exc,
                )
            self._store_down = True
            return []
        self._store_down = False
        return events

    async def _one(
        self, name: str, now: dict[str, Any], before: dict[str, Any] | None, nodes: dict[str, NodeFacts]
    ) -> DriftEvent | None:
        cluster = self.service.cluster
        if before is None:
            await self.store.baseline(name, now)
            log.info(
                "node %s/%s: CPU facts recorded as its baseline (%d flags)", cluster, name, len(now["flags"])
            )
            return None
        if not comparable(before, now):
            await self.store.baseline(name, now)
            log.info(
                "node %s/%s: its flags now come from %s (were %s): new baseline, not drift",
                cluster,
                name,
                now.get("flag_source"),
                before.get("flag_source"),
            )
            return None
        change = compare(before, now)
        if change is None:
            return None
        node = nodes[name]
        old = facts_before(node, before)
        vms = await self.service.reports.all_vm_facts()
        blocked, movable = impact(old, node, {**nodes, name: node}, vms)
        event: DriftEvent = {
            "kind": DRIFT_KIND,
            "id": new_id(self.service.clock()),
            "time": iso_utc(self.service.clock()),
            "cluster": cluster,
            "node": name,
            "appeared": list(change.appeared),
            "vanished": list(change.vanished),
            "qemu_before": before.get("qemu_version"),
            "qemu_after": now.get("qemu_version"),
            "changed": {k: list(v) for k, v in change.changed.items()},
            "vms_now_blocked": [_moved(m) for m in blocked],
            "vms_now_movable": [_moved(m) for m in movable],
        }
        await self.store.record(name, now, dict(event))
        await self.service.events.publish(event)  # queued when Redis is down meanwhile
        self.counter.labels(name).inc()
        log.warning(
            "node %s/%s drifted: flags appeared %s, vanished %s%s; %d VMs now blocked, %d now movable",
            cluster,
            name,
            " ".join(change.appeared) or "none",
            " ".join(change.vanished) or "none",
            "".join(f"; {k} {a} -> {b}" for k, (a, b) in change.changed.items()),
            len(blocked),
            len(movable),
        )
        return event

    async def recent(self, limit: int = 50, node: str | None = None) -> list[dict[str, Any]]:
        return await self.store.recent(limit, node)
