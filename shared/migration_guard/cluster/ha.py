"""Proxmox HA: which VMs it manages and where it may put them.

Read from ``/cluster/ha/resources`` and, on Proxmox VE 9, ``/cluster/ha/rules`` (pve-ha-manager
``src/PVE/API2/HA/Rules.pm``: node-affinity rules, ``nodes`` as ``node[:priority],...``, ``strict``;
the rules index also lists the groups not yet migrated, as ``ha-group-<name>`` rules,
``PVE/HA/Groups.pm migrate_groups_to_rules``), else ``/cluster/ha/groups`` (before 9:
``nodes``, ``restricted``; the resource names its ``group``). All three need ``Sys.Audit`` on ``/``.
A 501 or 404 for the rules means a Proxmox before 9: the groups are read instead.

Where HA puts a VM (pve-ha-manager ``PVE/HA/Manager.pm select_service_node``): among the online
nodes its rule names, the highest-priority ones; a strict rule (restricted group) never anything
else (HA stops the VM when none is online), a non-strict one any online node when none of its nodes
is. A VM without a rule may go to any node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from migration_guard.errors import ProxmoxBadAnswer, ProxmoxNotFound, ProxmoxNotImplemented

#: HA's requested states in which it starts the VM again after a node failure
RECOVERED_STATES = frozenset({"started", "enabled"})


@dataclass(frozen=True, slots=True)
class HaResource:
    vmid: int
    sid: str
    state: str
    #: the node-affinity rule (PVE 9) or group (before) that places it; "" for none
    rule: str = ""
    #: node -> priority from the rule or group; empty: any node
    nodes: tuple[tuple[str, int], ...] = ()
    #: strict rule / restricted group: never on another node
    strict: bool = False

    @property
    def recovered(self) -> bool:
        return self.state in RECOVERED_STATES

    def placement(self, source: str, online: Sequence[str]) -> list[str]:
        """The nodes HA moves the VM to from ``source`` (maintenance, relocation): the
        highest-priority online nodes of its rule, else (non-strict, no rule) any online node."""
        others = [n for n in online if n != source]
        if not self.nodes:
            return others
        ranked = [(prio, n) for n, prio in self.nodes if n in others]
        if not ranked:
            return [] if self.strict else others
        best = max(prio for prio, _ in ranked)
        return sorted(n for prio, n in ranked if prio == best)

    def recovery_nodes(self, source: str, every: Sequence[str]) -> list[tuple[str, bool]]:
        """Every node HA may start the VM on when ``source`` fails, with True for a node it uses
        only when none of the rule's nodes is online (a non-strict rule's fallback)."""
        others = [n for n in every if n != source]
        if not self.nodes:
            return [(n, False) for n in others]
        named = {n for n, _ in self.nodes}
        out = [(n, False) for n in others if n in named]
        if not self.strict:
            out += [(n, True) for n in others if n not in named]
        return out


@dataclass(frozen=True, slots=True)
class HaConfig:
    #: "rules" (Proxmox VE 9), "groups" (before), "none" (no HA resources)
    source: str
    resources: dict[int, HaResource]


Call = Callable[[str, str, Callable[[], Any]], Any]


def read_ha(call: Call, api: Any, where: str) -> HaConfig:
    """The HA configuration through ``call`` (the reader's one error mapping) on proxmoxer ``api``."""
    rows = call(
        "ha-resources", "the HA resources (/cluster/ha/resources)", lambda: api.cluster.ha.resources.get()
    )
    vms = [r for r in rows if str(r.get("type") or str(r["sid"]).partition(":")[0]) == "vm"]
    if not vms:
        return HaConfig("none", {})
    try:
        rules = call("ha-rules", "the HA rules (/cluster/ha/rules)", lambda: api.cluster.ha.rules.get())
    except (ProxmoxNotImplemented, ProxmoxNotFound):  # Proxmox VE before 9: groups
        groups = call("ha-groups", "the HA groups (/cluster/ha/groups)", lambda: api.cluster.ha.groups.get())
        return HaConfig("groups", _from_groups(vms, groups, where))
    return HaConfig("rules", _from_rules(vms, rules, where))


def _vmid(sid: str, where: str) -> int:
    kind, _, number = str(sid).partition(":")
    if not number.isdigit():
        raise ProxmoxBadAnswer(f"Proxmox at {where} answered the HA resources with sid {str(sid)[:40]!r}")
    return int(number)


def _node_list(value: Any, what: str, where: str) -> tuple[tuple[str, int], ...]:
    """``node[:priority],...`` (pve-ha-node-list; PVE::HA::Tools parse_node_priority): priority 0 by
    default."""
    if not isinstance(value, str):
        raise ProxmoxBadAnswer(f"Proxmox at {where} answered {what} with nodes that are not a list string")
    out = []
    for entry in value.replace(";", ",").split(","):
        entry = entry.strip()
        if not entry:
            continue
        node, _, prio = entry.partition(":")
        if prio and not prio.isdigit():
            raise ProxmoxBadAnswer(f"Proxmox at {where} answered {what} with node entry {entry[:40]!r}")
        out.append((node, int(prio or 0)))
    return tuple(out)


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _from_rules(vms: Iterable[dict], rules: Iterable[dict], where: str) -> dict[int, HaResource]:
    placed: dict[str, tuple[str, tuple[tuple[str, int], ...], bool]] = {}
    for rule in rules:
        # a disabled rule does not apply; the manager drops an infeasible one (``errors``)
        if rule.get("type") != "node-affinity" or _flag(rule.get("disable", 0)) or rule.get("errors"):
            continue
        name = str(rule["rule"])
        nodes = _node_list(rule.get("nodes"), f"HA rule {name[:40]}", where)
        resources = rule.get("resources")
        if not isinstance(resources, str):
            raise ProxmoxBadAnswer(f"Proxmox at {where} answered HA rule {name[:40]} without resources")
        for sid in resources.split(","):
            placed.setdefault(sid.strip(), (name, nodes, _flag(rule.get("strict", 0))))
    return {_vmid(r["sid"], where): _resource(r, where, *placed.get(r["sid"], ("", (), False))) for r in vms}


def _from_groups(vms: Iterable[dict], groups: Iterable[dict], where: str) -> dict[int, HaResource]:
    by_name = {
        str(g["group"]): (
            _node_list(g.get("nodes"), f"HA group {str(g['group'])[:40]}", where),
            _flag(g.get("restricted", 0)),
        )
        for g in groups
    }
    out = {}
    for r in vms:
        group = str(r.get("group") or "")
        nodes, strict = by_name.get(group, ((), False))
        out[_vmid(r["sid"], where)] = _resource(r, where, group if group in by_name else "", nodes, strict)
    return out


def _resource(
    row: dict, where: str, rule: str, nodes: tuple[tuple[str, int], ...], strict: bool
) -> HaResource:
    return HaResource(
        vmid=_vmid(row["sid"], where),
        sid=str(row["sid"]),
        state=str(row.get("state") or "started"),
        rule=rule,
        nodes=nodes,
        strict=strict,
    )
