"""The reports of one cluster, built from its service's facts: the cluster view (nodes and their
CPUs), the CPU type recommendation, and the matrix of every VM against every node (matrix.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from migration_guard.engine import pve_versions
from migration_guard.engine import verdicts as engine
from migration_guard.engine.checks import nested_note, vm_spec
from migration_guard.engine.facts import NodeFacts, VmFacts
from migration_guard.errors import (
    CpuSpecError,
    GuardError,
    InputError,
    UnknownNodeError,
)
from migration_guard.service.matrix import Matrix
from migration_guard.service.whatif import added_hosts, check_removed, what_if_block
from migration_guard.store.events import iso_utc


class Facts(Protocol):
    """What the reports read of a service."""

    cluster: str

    def clock(self) -> float: ...
    async def node_list(self, renew_after: float | None = None) -> Any: ...
    async def vm_list(self, renew_after: float | None = None) -> Any: ...
    async def node(self, name: str, *, online: bool | None = None) -> Any: ...
    async def vm(self, node: str, vmid: int) -> Any: ...
    def fresh_vm(self, node: str, vmid: int) -> VmFacts | None: ...


class Reports:
    """The cluster-wide answers of one service (``GET /v1/cluster``, ``/v1/cluster/recommendation``,
    ``/v1/matrix``)."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self._matrix = Matrix(facts)

    async def cluster_view(self) -> dict:
        nodes, age = await self.facts.node_list()
        facts = await asyncio.gather(
            *(self.facts.node(n.name, online=n.online) for n in nodes), return_exceptions=True
        )
        out = []
        for summary, got in zip(nodes, facts, strict=True):
            if isinstance(got, BaseException):
                if not isinstance(got, GuardError):
                    raise got
                out.append({"name": summary.name, "online": summary.online, "error": str(got)})
                continue
            node, node_age = got
            named = (
                pve_versions.named_ranking(engine.recommend([node.cpu]).ranked, [node])
                if node.cpu is not None
                else {"recommended": None, "reason": None}
            )
            best = named["recommended"]
            note = nested_note(node)
            out.append(
                {
                    **({"note": note.message} if note is not None else {}),
                    "name": node.name,
                    "cluster": node.cluster,
                    "online": node.online,
                    "cpu_model": node.cpu_model,
                    "vendor": node.cpu.vendor if node.cpu else None,
                    # physical address width: MIGRATION_GUARD_NODE_PHYS_BITS or the recorded CPU
                    "phys_bits": node.cpu.phys_bits if node.cpu else None,
                    "best_cpu_type": best,
                    "best_cpu_note": named["reason"],
                    "flag_source": node.flag_source,
                    "pve_version": node.pve_version,
                    "kernel_version": node.kernel_version,
                    "qemu_version": node.qemu_version,
                    "cpu_types_from": pve_versions.accepts_of(node).source or None,
                    "facts_age_s": round(node_age, 1),
                }
            )
        view: dict[str, Any] = {
            "cluster": self.facts.cluster,
            "nodes": out,
            "checked_at": iso_utc(self.facts.clock()),
        }
        known = [g[0] for g in facts if not isinstance(g, BaseException)]
        view["rolling_upgrade"] = pve_versions.rolling_upgrade(known)
        return view

    async def _online_hosts(self, names: list[str] | None) -> list[NodeFacts]:
        nodes, _ = await self.facts.node_list()
        online = {n.name: n.online for n in nodes}
        if names:
            unknown = [n for n in names if n not in online]
            if unknown:
                raise UnknownNodeError(
                    f"cluster {self.facts.cluster} has no node {', '.join(unknown)}; "
                    f"its nodes are {', '.join(sorted(online))}"
                )
            offline = [n for n in names if not online[n]]
            if offline:
                raise InputError(f"node {', '.join(offline)} is offline: its CPU cannot be read")
        else:
            names = [n for n, up in online.items() if up]
        got = await asyncio.gather(*(self.facts.node(n) for n in names))
        return [g[0] for g in got]

    async def all_vm_facts(self) -> list[VmFacts]:
        return await self._matrix.vm_facts()

    async def recommendation(
        self,
        names: list[str] | None,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
        host_data: Sequence[dict] = (),
    ) -> dict:
        """``add``/``remove``/``host_data``: a what-if question (service/whatif.py): the answer gains a
        ``what_if`` block about the cluster after that change."""
        asked = bool(add or host_data or remove)
        if asked:  # bad names answer before any VM is read
            known = [n.name for n in (await self.facts.node_list())[0]]
            check_removed(self.facts.cluster, remove, known)
            added_hosts(self.facts.cluster, add, host_data, set(known))
        hosts_facts = await self._online_hosts(names)
        unknown = [n.name for n in hosts_facts if n.cpu is None]
        hosts = [n.cpu for n in hosts_facts if n.cpu is not None]
        rec = engine.recommend(hosts)
        named = pve_versions.named_ranking(rec.ranked, [n for n in hosts_facts if n.cpu is not None])
        vms = await self.all_vm_facts()
        at_risk = []
        for vm in vms:
            try:
                spec = vm_spec(vm)  # a custom-NAME type with the custom models read with the VM
                if spec.is_passthrough:
                    continue
                runs = [engine.check_runnable(spec, h) for h in hosts]
            except CpuSpecError:
                continue
            cannot: list[dict[str, Any]] = [
                {"node": r.host, "missing": list(r.missing)} for r in runs if not r.runnable
            ]
            # a node whose Proxmox does not define the type refuses it whatever its CPU offers
            for n in hosts_facts:
                defined = pve_versions.accepts_of(n).accepts(spec.cputype)
                if defined is False and n.name not in {c["node"] for c in cannot}:
                    cannot.append({"node": n.name, "missing": [], "type_unknown": True})
            if cannot:
                at_risk.append(
                    {
                        "vmid": vm.vmid,
                        "name": vm.name,
                        "node": vm.node,
                        "cpu": vm.cpu or "kvm64",
                        "cannot_run_on": cannot,
                    }
                )
        notes = [n.message for n in map(nested_note, hosts_facts) if n is not None]
        change = {}
        if asked:
            block = what_if_block(
                self.facts.cluster,
                hosts_facts,
                known,
                vms,
                add=add,
                remove=remove,
                hosts=host_data,
                checked_at=iso_utc(self.facts.clock()),
            )
            change = {"what_if": block}
        return {
            "cluster": self.facts.cluster,
            "nodes": [n.name for n in hosts_facts],
            "nodes_without_flags": unknown,
            **({"notes": notes} if notes else {}),
            "recommended": named["recommended"],
            "ranked": named["ranked"],
            "reason": named["reason"],
            "blocked": [{"type": b.type, "node": b.host, "missing": list(b.missing)} for b in rec.blocked],
            "vms_at_risk": at_risk,
            "checked_at": iso_utc(self.facts.clock()),
            **change,
        }

    async def matrix(self, *, compact: bool = False) -> dict:
        return await self._matrix.build(compact=compact)
