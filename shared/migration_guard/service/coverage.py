"""Coverage (``GET /v1/coverage``, the ``migration_guard_unguarded_vms`` gauge): which VMs the guard
does not protect. A VM is guarded when its config's ``hookscript`` is the guard's
(``STORAGE:snippets/migration-guard-hook``); templates never start and are left out; VMs tagged
``migration-guard-skip`` are unguarded on purpose and listed apart. A guarded VM whose hookscript
volume is missing on some online node cannot start there (Proxmox refuses: ``script ... does not
exist``): the snippets each node's storage lists (``pvesm list``'s API) say where."""

from __future__ import annotations

import asyncio
from typing import Any

from migration_guard.engine.checks import SKIP_TAG
from migration_guard.engine.facts import VmFacts
from migration_guard.errors import GuardError, ProxmoxPermissionError, UnknownVmError
from migration_guard.service.latest import Latest
from migration_guard.store.events import iso_utc

SCRIPT_NAME = "migration-guard-hook"


def is_guard_hook(volid: str) -> bool:
    return volid.rsplit("/", 1)[-1] == SCRIPT_NAME


def _row(vm: VmFacts, **extra: Any) -> dict:
    return {"vmid": vm.vmid, "name": vm.name, "node": vm.node, "status": vm.status, **extra}


class Coverage:
    """The coverage of one service's cluster; keeps the latest answer for /metrics."""

    def __init__(self, service: Any) -> None:
        self.service = service
        #: the latest answer (GET /v1/coverage keeps it; /metrics renews it every few minutes)
        self.latest = Latest(self._body, service.clock)

    async def body(self) -> dict:
        return await self.latest.run()

    async def _body(self) -> dict:
        facts = self.service.facts
        vms, _ = await facts.vm_list()
        nodes, _ = await facts.node_list()
        wanted = [v for v in vms if not v.template]
        got = await asyncio.gather(*(facts.vm(v.node, v.vmid) for v in wanted), return_exceptions=True)
        guarded: list[VmFacts] = []
        out: dict[str, Any] = {"unguarded": [], "skipped": [], "unreadable": []}
        for summary, g in zip(wanted, got, strict=True):
            if isinstance(g, BaseException):
                if isinstance(g, UnknownVmError):
                    continue  # moved or deleted since the list was read
                if not isinstance(g, GuardError):
                    raise g
                out["unreadable"].append({"vmid": summary.vmid, "node": summary.node, "error": str(g)})
                continue
            vm = g[0]
            if SKIP_TAG in vm.tags:
                out["skipped"].append(_row(vm, why=f"tagged {SKIP_TAG}"))
            elif not is_guard_hook(vm.hookscript):
                out["unguarded"].append(_row(vm, hookscript=vm.hookscript or None))
            else:
                guarded.append(vm)
        online = [n.name for n in nodes if n.online]
        missing, note = await self._missing_volumes(guarded, online)
        body = {
            "cluster": self.service.cluster,
            "checked_at": iso_utc(self.service.clock()),
            "vms": len(wanted),
            "guarded": len(guarded),
            **out,
            "missing_volume": missing,
            "volume_check": note,
            "nodes_not_asked": sorted(n.name for n in nodes if not n.online),
        }
        return body

    async def _missing_volumes(self, guarded: list[VmFacts], nodes: list[str]) -> tuple[list[dict], str]:
        """VMs whose hookscript volume some online node does not list, and how the check went."""
        volids = sorted({vm.hookscript for vm in guarded})
        pairs = [(n, v.partition(":")[0]) for n in nodes for v in volids]
        reader = self.service.reader
        if not hasattr(reader, "snippet_volumes"):  # (the benchmarks' in-memory reader)
            return [], "skipped: this cluster reader cannot list the nodes' snippets"
        listed = await asyncio.gather(
            *(self.service._run(reader.snippet_volumes, n, s) for n, s in dict.fromkeys(pairs)),
            return_exceptions=True,
        )
        seen: dict[tuple[str, str], frozenset[str]] = {}
        for pair, got in zip(dict.fromkeys(pairs), listed, strict=True):
            if isinstance(got, ProxmoxPermissionError):
                return [], (
                    "skipped: the service's Proxmox token lacks Datastore.Audit on /storage, so it cannot "
                    "list the nodes' snippets"
                )
            seen[pair] = got if isinstance(got, frozenset) else frozenset()  # no such storage there
        rows = []
        for vm in guarded:
            storage = vm.hookscript.partition(":")[0]
            absent = [n for n in nodes if vm.hookscript not in seen.get((n, storage), frozenset())]
            if absent:
                rows.append(_row(vm, hookscript=vm.hookscript, missing_on=absent))
        return rows, "done"
