"""The matrix of one cluster: every VM against every other node (``GET /v1/matrix``).

A cell (verdict, code, exit) depends on a VM only through the fields of ``_alike`` (not its id or
name: those appear in messages, which the matrix leaves out), and on the two nodes' facts. So:

* a cell is computed once per distinct (VM fields, source facts, target facts) and kept across
  requests while the node facts stay the same objects (``ClusterFacts.known`` keeps unchanged
  facts' identity across refreshes): a warm matrix judges nothing;
* VMs alike share one row of cells, built once per request;
* the VM facts fresh in the in-process cache are taken from it directly; only the missing ones
  are loaded (all at once).

Two forms: ``full`` (each row's cells by node name) and ``compact`` (the distinct cells once, in
``cells``; each row's ``targets`` lists a cell index per node of ``nodes``, null for the VM's own
node): the same verdicts in a body a tenth the size for big clusters.
"""

from __future__ import annotations

import asyncio
from typing import Any

from migration_guard.engine.checks import SKIP_TAG
from migration_guard.engine.facts import NodeFacts, VmFacts
from migration_guard.errors import UnknownVmError
from migration_guard.service.outcome import UNREACHABLE, _judge
from migration_guard.store.events import iso_utc

NOTE = "Proxmox's own precondition check (storage, local resources) is not part of the matrix"
#: cells kept across requests (each a few hundred bytes); past this many they are dropped
CELL_CAP = 200_000


def _alike(vm: VmFacts) -> tuple:
    # custom_conf: a custom-NAME type is judged on the cluster's definitions read with the VM
    return (
        SKIP_TAG in vm.tags,
        vm.cpu,
        vm.pending_cpu,
        vm.status,
        vm.running_machine,
        vm.node,
        vm.custom_conf,
    )


class Matrix:
    """The matrix of the cluster ``facts`` reads (a ``ClusterFacts``)."""

    def __init__(self, facts: Any) -> None:
        self.facts = facts
        #: (alike, id(source), id(target)) -> (source, target, cell index): the nodes are kept so
        #: their ids are not reused while the entry lives
        self._cells: dict[tuple, tuple[NodeFacts, NodeFacts, int]] = {}
        #: the distinct cells, by index (a cell is {"verdict", "code", "exit"})
        self._table: list[dict] = []
        self._index: dict[tuple, int] = {}
        #: (node, online) -> the facts standing in for a node without facts (offline, unreachable),
        #: the same object every time, so its cells are kept too
        self._blank: dict[tuple[str, bool], NodeFacts] = {}

    def _no_facts(self, name: str, online: bool) -> NodeFacts:
        blank = self._blank.get((name, online))
        if blank is None:
            blank = self._blank[(name, online)] = NodeFacts(self.facts.cluster, name, online)
        return blank

    async def _node_facts(self) -> tuple[list[str], dict[str, NodeFacts]]:
        nodes, _ = await self.facts.node_list()
        got = await asyncio.gather(
            *(self.facts.node(n.name) for n in nodes if n.online), return_exceptions=True
        )
        answers = iter(got)
        out: dict[str, NodeFacts] = {}
        for summary in nodes:
            g = next(answers) if summary.online else None
            if g is None or isinstance(g, UNREACHABLE):  # offline, or no facts about it
                out[summary.name] = self._no_facts(summary.name, summary.online)
            elif isinstance(g, BaseException):
                raise g
            else:
                out[summary.name] = g[0]
        return [n.name for n in nodes], out

    async def vm_facts(self) -> list[VmFacts]:
        """Every VM's facts (templates left out): fresh ones straight from the in-process cache,
        the others loaded at once; a VM gone since the list was read is left out."""
        vms, _ = await self.facts.vm_list()
        out: list[VmFacts] = []
        missing = []
        for v in vms:
            if v.template:
                continue
            hit = self.facts.fresh_vm(v.node, v.vmid)
            if hit is None:
                missing.append(v)
            else:
                out.append(hit)
        # a bounded number of loads at a time (a few per Proxmox thread): 10,000 tasks at once
        # would leave the process's memory at their high-water mark for good, and go no faster
        pending = iter(missing)
        failed: list[BaseException] = []

        async def loader() -> None:
            for v in pending:
                try:
                    out.append((await self.facts.vm(v.node, v.vmid))[0])
                except UnknownVmError:  # moved or deleted since the list was read
                    continue
                except BaseException as exc:  # noqa: BLE001 - raised below, after the others stop
                    failed.append(exc)
                    return

        width = max(1, min(len(missing), 4 * self.facts.settings.proxmox_workers))
        await asyncio.gather(*(loader() for _ in range(width)))
        if failed:
            raise failed[0]
        return out

    def _cell(self, vm: VmFacts, alike: tuple, source: NodeFacts, target: NodeFacts) -> int:
        key = (alike, id(source), id(target))
        hit = self._cells.get(key)
        if hit is not None and hit[0] is source and hit[1] is target:
            return hit[2]
        v = _judge(vm, source, target, None, suggest=False)  # a cell shows no suggestion
        cell = (v.verdict, v.deny_code if v.verdict != "allow" else "", v.exit_code)
        index = self._index.get(cell)
        if index is None:
            index = self._index[cell] = len(self._table)
            self._table.append({"verdict": cell[0], "code": cell[1], "exit": cell[2]})
        if len(self._cells) > CELL_CAP:
            self._cells.clear()
        self._cells[key] = (source, target, index)
        return index

    async def build(self, *, compact: bool = False) -> dict:
        names, node_facts = await self._node_facts()
        vms = await self.vm_facts()
        vms.sort(key=lambda v: v.vmid)
        cluster = self.facts.cluster
        table = self._table
        rows = []
        alikes = []
        # VMs alike share their row of cells (a dict by node name, or a list of cell indexes)
        shared: dict[tuple, Any] = {}
        for vm in vms:
            alike = _alike(vm)
            alikes.append(alike)
            cells = shared.get(alike)
            if cells is None:
                source = node_facts.get(vm.node) or self._no_facts(vm.node, False)
                indexes = [
                    None if name == vm.node else self._cell(vm, alike, source, target)
                    for name, target in node_facts.items()
                ]
                if compact:
                    cells = indexes
                else:
                    cells = {
                        name: table[i] for name, i in zip(node_facts, indexes, strict=True) if i is not None
                    }
                shared[alike] = cells
            rows.append(
                {
                    "vmid": vm.vmid,
                    "name": vm.name,
                    "node": vm.node,
                    "status": vm.status,
                    "cpu": vm.cpu or "kvm64",
                    "tags": list(vm.tags),
                    "targets": cells,
                }
            )
        body: dict[str, Any] = {"cluster": cluster, "nodes": names}
        if compact:
            used = sorted({i for cells in shared.values() for i in cells if i is not None})
            renumber = {old: new for new, old in enumerate(used)}
            renumbered = {
                alike: [None if i is None else renumber[i] for i in cells] for alike, cells in shared.items()
            }
            for alike, row in zip(alikes, rows, strict=True):
                row["targets"] = renumbered[alike]
            body["format"] = "compact"
            body["cells"] = [table[i] for i in used]
        body["vms"] = rows
        body["note"] = NOTE
        body["checked_at"] = iso_utc(self.facts.clock())
        return body
