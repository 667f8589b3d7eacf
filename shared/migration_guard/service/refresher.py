"""Keeps a cluster's shared facts fresh in the background: the node list, the VM list, QEMU's
flag report and every online node's CPU, versions and machine types; after every good round the
drift alarm compares each node's CPU facts with the last stored ones (service/drift.py).

These are few (one call per node, two for the cluster), change rarely, and every check needs
them; a VM's own facts (config, status) are many and are read when a check asks. With this
running, a check for a VM whose facts are not cached waits for one parallel round trip to
Proxmox, not two (finding the VM's node in the VM list, then reading its config there), and a
burst of decisions for one node reads each VM once and no node at all.

``serve`` runs a first round before it listens (``first_round``, bounded by the Proxmox timeout),
so even its first check finds them. Each value is then renewed when it is older than half its
lifetime, so checks never find it expired. While Proxmox does not answer, checks use the last
known facts (the cache's stale answers); this loop logs the outage once and its end once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from migration_guard.errors import GuardError

log = logging.getLogger("migration_guard.refresher")

#: never renew more often than this, whatever the lifetimes (seconds)
MIN_INTERVAL_S = 1.0


class InventoryRefresher:
    def __init__(self, service: Any) -> None:
        self.service = service
        s = service.settings
        #: renew a value older than this (half its lifetime)
        self.list_ttl = s.cache_list_ttl / 2
        self.node_ttl = s.cache_node_ttl / 2
        self.interval = max(MIN_INTERVAL_S, min(self.list_ttl, self.node_ttl))
        self.rounds = 0
        self.good_rounds = 0
        self.failing: str | None = None

    @property
    def enabled(self) -> bool:
        """Off when caching is off: nothing would be kept."""
        s = self.service.settings
        return s.cache_list_ttl > 0 and s.cache_node_ttl > 0

    async def round(self) -> None:
        """Renew what is older than half its lifetime. Raises nothing: a failure is logged."""
        service = self.service
        try:
            first = await asyncio.gather(
                service.node_list(self.list_ttl),
                service.vm_list(self.list_ttl),
                service.qemu_flags(self.node_ttl),
                return_exceptions=True,
            )
            _raise_first(first)
            nodes, _ = first[0]  # type: ignore[misc]
            _raise_first(
                await asyncio.gather(
                    *(service.facts.node_status(n.name, self.node_ttl) for n in nodes if n.online),
                    return_exceptions=True,
                )
            )
        except GuardError as exc:
            if self.failing is None:
                meanwhile = (
                    "checks answer from the last known facts, labelled with their age"
                    if self.good_rounds
                    else "checks without cached facts answer unknown (cluster-unreachable)"
                )
                log.warning(
                    "cannot refresh cluster %s's nodes and VM list: %s; %s; retrying every %.0f s",
                    service.cluster,
                    exc,
                    meanwhile,
                    self.interval,
                )
            self.failing = str(exc)
            return
        finally:
            self.rounds += 1
        self.good_rounds += 1
        if self.failing is not None:
            log.info("cluster %s answers again: its nodes and VM list are fresh", service.cluster)
            self.failing = None
        drift = getattr(service, "drift", None)
        if drift is not None:  # each node's CPU facts against the last stored (service/drift.py)
            await drift.observe()

    async def first_round(self) -> None:
        """The round before the service listens: bounded by the Proxmox timeout (then the service
        starts without its inventory and the next rounds read it); logs what it read."""
        if not self.enabled:
            return
        service = self.service
        started = time.monotonic()
        try:
            await asyncio.wait_for(self.round(), service.settings.pve_timeout + 1)
        except TimeoutError:
            log.warning(
                "cluster %s did not answer within %.0f s at start-up: serving without its nodes and "
                "VM list, reading them in the background",
                service.cluster,
                service.settings.pve_timeout + 1,
            )
            return
        if self.failing is None:
            nodes = service.cache.peek("nodes")
            vms = service.cache.peek("vms")
            log.info(
                "cluster %s: %d nodes and %d VMs read in %.0f ms",
                service.cluster,
                len(nodes[0]) if nodes else 0,
                len(vms[0]) if vms else 0,
                (time.monotonic() - started) * 1000,
            )

    async def run(self, *, after_first: bool = False) -> None:
        """Until cancelled. ``after_first``: ``first_round`` was just done, wait before the next."""
        if not self.enabled:
            return
        if after_first:
            await asyncio.sleep(self.interval)
        while True:
            try:
                await self.round()
            except Exception:  # noqa: BLE001 - a bug here must not end the service's refreshing
                log.exception("refreshing cluster %s failed unexpectedly", self.service.cluster)
            await asyncio.sleep(self.interval)


def _raise_first(results: Sequence[object]) -> None:
    for result in results:
        if isinstance(result, BaseException):
            raise result
