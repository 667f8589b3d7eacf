"""The status of VMs (running or not, and the machine and QEMU a running VM uses), read one VM
at a time, or one node at a time when many VMs of a node are asked together.

A node evacuation asks about hundreds of VMs of one node at once. ``status/current`` per VM
would make one Proxmox call each; ``GET /nodes/{node}/qemu?full=1`` answers the same fields for
every VM of the node in one call (the call pvestatd itself makes every 10 s; one request also
spares pvedaemon's few workers a queue of hundreds). So: the first VM of a node is read alone (a
single check stays one small call); a VM asked while another VM of the same node is being read
joins a node-wide read instead (one for the whole burst). A node-wide answer serves later VMs of
that node for ``reuse_s`` (half the VM facts lifetime).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from migration_guard.errors import GuardError


class VmStatusReader:
    def __init__(
        self,
        run: Callable[..., Awaitable[Any]],
        reader: Any,
        *,
        reuse_s: float,
        clock: Callable[[], float] = time.monotonic,
        list_node: Callable[[str], Awaitable[dict[int, dict]]] | None = None,
    ) -> None:
        self._run = run
        self._reader = reader
        #: the node-wide read itself (default: the reader's, in ``run``); the service passes one
        #: through its cache, so processes sharing a Redis make one node-wide read between them
        self._list_node = list_node
        self._reuse_s = reuse_s
        self._clock = clock
        #: node -> VM status reads in flight, one VM at a time
        self._single: dict[str, int] = {}
        #: node -> the node-wide read in flight
        self._listing: dict[str, asyncio.Future] = {}
        #: node -> (rows by vmid, when read) of the last node-wide read
        self._listed: dict[str, tuple[dict[int, dict], float]] = {}
        self.node_reads = 0

    async def status(self, node: str, vmid: int) -> dict:
        listed = self._listed.get(node)
        if listed is not None and self._clock() - listed[1] < self._reuse_s and vmid in listed[0]:
            return listed[0][vmid]
        listing = self._listing.get(node)
        if listing is None and self._single.get(node, 0) > 0:
            listing = self._start_listing(node)
        if listing is not None:
            try:
                rows = await asyncio.shield(listing)
            except GuardError:
                rows = {}  # the node-wide read failed: this VM is asked alone below
            row = rows.get(vmid)
            if row is not None:
                return row
        self._single[node] = self._single.get(node, 0) + 1
        try:
            status: dict = await self._run(self._reader.vm_status, node, vmid)
            return status
        finally:
            self._single[node] -= 1

    def _start_listing(self, node: str) -> asyncio.Future:
        self.node_reads += 1
        future = asyncio.ensure_future(self._list(node))
        self._listing[node] = future
        future.add_done_callback(lambda _f: self._listing.pop(node, None))
        return future

    async def _list(self, node: str) -> dict[int, dict]:
        if self._list_node is not None:
            rows = await self._list_node(node)
        else:
            rows = await self._run(self._reader.node_vm_statuses, node)
        self._listed[node] = (rows, self._clock())
        return rows
