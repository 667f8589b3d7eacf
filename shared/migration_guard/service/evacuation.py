"""The evacuation pre-flight of one node (``GET /v1/nodes/{node}/evacuation``): every VM on it
(running and stopped) against every node it could move to, with the verdicts ``check`` gives
(the service's one verdict path), the VMs with nowhere to go first, each with the one-line why
and a fix (a CPU type that runs on the node and at least one other).

HA-managed VMs are judged against the nodes HA would move them to only (its node-affinity rule or
group: cluster/ha.py). When HA's configuration cannot be read, no allow stands for any VM (HA
might send it elsewhere): those verdicts become ``unknown`` with the reason."""

from __future__ import annotations

import asyncio
from typing import Any

from migration_guard.cluster.ha import HaConfig, HaResource
from migration_guard.engine import pve_versions
from migration_guard.engine import verdicts as engine
from migration_guard.engine.cpu_spec import CpuSpec
from migration_guard.engine.facts import NodeFacts, VmSummary
from migration_guard.engine.offers import requirement
from migration_guard.errors import GuardError, ProxmoxError, UnknownNodeError
from migration_guard.store.events import iso_utc

#: the deny codes a different CPU type can cure (a fix is then a CPU type)
CPU_CODES = frozenset({"missing-flags", "vendor-mismatch", "cpu-type-unknown-on-target"})
#: the reason an allow loses when HA's configuration could not be read
HA_UNKNOWN = "ha-unknown"


def ha_of(res: HaResource | None, allowed: list[str]) -> dict | None:
    """The ``ha`` object of a VM: null when HA does not manage it."""
    if res is None:
        return None
    return {
        "managed": True,
        "group_or_rule": res.rule or None,
        "strict": res.strict,
        "state": res.state,
        "allowed_nodes": allowed,
    }


def target_of(node: str, outcome: Any) -> dict:
    """One target of a VM (``outcome``: the service's check, or the GuardError it raised): the
    verdict, its reason codes and one message (the deciding reason's)."""
    if isinstance(outcome, GuardError):
        return {
            "node": node,
            "verdict": "unknown",
            "code": outcome.code,
            "reasons": [outcome.code],
            "message": str(outcome),
        }
    body = outcome.body
    reasons = body.get("reasons") or []
    deciding = ""
    if body["verdict"] == "allow":
        message = f"{body.get('cpu') or 'its CPU type'} runs on {node}"
    else:
        deciding = outcome.verdict.deny_code if outcome.verdict is not None else ""
        first = next((r for r in reasons if r["code"] == deciding), reasons[0] if reasons else None)
        deciding = first["code"] if first else ""
        message = first["message"] if first else "no reason given"
    return {
        "node": node,
        "verdict": body["verdict"],
        "code": deciding,
        "reasons": [r["code"] for r in reasons],
        "message": message,
    }


class Evacuation:
    """The pre-flight of a node's maintenance, from the service's verdicts (``service.check``)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    async def evacuation(self, node: str) -> dict:
        service = self.service
        nodes, _ = await service.node_list()
        names = [n.name for n in nodes]
        if node not in names:
            raise UnknownNodeError(
                f"cluster {service.cluster} has no node by that name; "
                f"its nodes are {', '.join(sorted(names))}"
            )
        vms, _ = await service.vm_list()
        here = sorted((v for v in vms if v.node == node and not v.template), key=lambda v: v.vmid)
        ha: HaConfig | None
        ha_error = ""
        try:
            ha = await service.facts.ha()
        except ProxmoxError as exc:
            ha, ha_error = None, str(exc)
        online = [n.name for n in nodes if n.online]
        others = [n for n in names if n != node]
        rows = await asyncio.gather(*(self._vm(vm, node, others, online, ha, ha_error) for vm in here))
        stuck = [r for r in rows if r.pop("_state") == "stuck"]
        for row in stuck:
            row["_fix"] = await self._fix(node, row)
        summary = {
            "vms": len(rows),
            "movable": sum(1 for r in rows if r["allowed_targets"]),
            "stuck": len(stuck),
            "unknown": len(rows) - len(stuck) - sum(1 for r in rows if r["allowed_targets"]),
            "ha_managed": sum(1 for r in rows if r["ha"]),
        }
        body: dict[str, Any] = {
            "cluster": service.cluster,
            "node": node,
            "summary": summary,
            "stuck": [self._stuck(r) for r in stuck],
            "vms": rows,
            "ha_source": ha.source if ha else "unknown",
            "checked_at": iso_utc(service.clock()),
        }
        if ha_error:
            body["ha_error"] = ha_error
        return body

    async def _vm(
        self,
        vm: VmSummary,
        node: str,
        others: list[str],
        online: list[str],
        ha: HaConfig | None,
        ha_error: str,
    ) -> dict:
        res = ha.resources.get(vm.vmid) if ha else None
        managed = res is not None and res.state != "ignored"  # HA leaves an ignored VM alone
        allowed = res.placement(node, online) if res is not None and managed else None
        judged = [n for n in others if allowed is None or n in allowed]
        outcomes = await asyncio.gather(
            *(self.service.check(vm.vmid, t, node) for t in judged), return_exceptions=True
        )
        targets, cpu = [], ""
        for name, outcome in zip(judged, outcomes, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, GuardError):
                raise outcome
            if not isinstance(outcome, GuardError):
                cpu = cpu or outcome.body.get("cpu", "")
            target = target_of(name, outcome)
            if ha is None and target["verdict"] == "allow":
                target["verdict"] = "unknown"
                target["code"] = HA_UNKNOWN
                target["reasons"].append(HA_UNKNOWN)
                target["message"] = (
                    f"HA's configuration could not be read ({ha_error}): HA may send VM {vm.vmid} "
                    "elsewhere; give the token Sys.Audit on / and ask again"
                )
            targets.append(target)
        verdicts = {t["verdict"] for t in targets}
        state = "movable" if "allow" in verdicts else "unknown" if "unknown" in verdicts else "stuck"
        return {
            "vmid": vm.vmid,
            "name": vm.name,
            "cpu": cpu or None,
            "status": vm.status,
            "ha": ha_of(res if managed else None, allowed or []),
            "targets": targets,
            "allowed_targets": [t["node"] for t in targets if t["verdict"] == "allow"],
            "_state": state,
        }

    @staticmethod
    def _stuck(row: dict) -> dict:
        fix, fix_why, fix_nodes = row.pop("_fix")
        return {
            "vmid": row["vmid"],
            "name": row["name"],
            "cpu": row["cpu"],
            "status": row["status"],
            "why": _why(row),
            "fix": fix,
            "fix_nodes": fix_nodes,
            "fix_why": fix_why,
        }

    async def _fix(self, node: str, row: dict) -> tuple[str | None, str, list[str]]:
        """(a CPU type that runs on ``node`` and at least one other node HA allows, why, where)."""
        codes = {c for t in row["targets"] for c in t["reasons"]}
        candidates = [t["node"] for t in row["targets"]]
        if not candidates:
            return None, "HA may move it to no other node: add a node to its rule or group", []
        if not codes & CPU_CODES:
            return None, "no CPU type helps: " + "; ".join(t["message"] for t in row["targets"][:2]), []
        try:
            got = await asyncio.gather(*(self.service.node(n) for n in [node, *candidates]))
        except GuardError as exc:
            return None, f"the nodes' CPUs could not be read: {exc}", []
        facts: list[NodeFacts] = [g[0] for g in got]
        source, rest = facts[0], [f for f in facts[1:] if f.cpu is not None and f.online]
        if source.cpu is None:
            return None, f"{node}'s CPU is not known (offline, or its status lacks the flags)", []
        runs: dict[str, list[str]] = {}
        order: list[str] = []
        for other in rest:
            ranked = engine.recommend([source.cpu, other.cpu]).ranked  # type: ignore[list-item]
            for name in pve_versions.named_ranking(ranked, [source, other])["ranked"]:
                runs.setdefault(name, []).append(other.name)
                if name not in order:
                    order.append(name)
        if not order:
            return None, f"no CPU type runs on both {node} and any of {', '.join(candidates)}", []
        # of the types within a tenth of the most capable one, the one that reaches most nodes; the
        # one that reaches most of all is named too
        top = max(_capability(t) for t in order)
        best = max(order, key=lambda t: (_capability(t) >= 0.9 * top and len(runs[t]), _capability(t)))
        widest = max(order, key=lambda t: (len(runs[t]), _capability(t)))
        why = f"set cpu: {best} (runs on {node} and {', '.join(runs[best])}) and restart the VM"
        if len(runs[widest]) > len(runs[best]):
            why += f"; {widest} runs on {', '.join(runs[widest])} too"
        return best, why, runs[best]


def _capability(name: str) -> int:
    """How much of the CPU a type gives the guest (its feature bits), to rank fixes."""
    try:
        return requirement(CpuSpec(raw=name, cputype=name)).bits.bit_count()
    except GuardError:
        return -1


def _why(row: dict) -> str:
    """The one line of a VM with nowhere to go."""
    ha = row["ha"]
    targets = row["targets"]
    if ha and not targets:
        rule = ha["group_or_rule"] or "its HA rule"
        return f"HA rule {rule} allows no online node but this one: HA would stop VM {row['vmid']}"
    if not targets:
        return "the cluster has no other node"
    # the nodes by reason code, then the first node's message as the example: one short line
    by_code: dict[str, list[str]] = {}
    for t in targets:
        by_code.setdefault(t["code"] or t["verdict"], []).append(t["node"])
    codes = "; ".join(f"{', '.join(nodes)}: {code}" for code, nodes in by_code.items())
    example = targets[0]["message"]
    if ha:
        rule = ha["group_or_rule"] or "no rule"
        return f"HA ({rule}) may only move it to {', '.join(ha['allowed_nodes'])} ({codes}): {example}"
    return f"no other node can take it ({codes}): {example}"
