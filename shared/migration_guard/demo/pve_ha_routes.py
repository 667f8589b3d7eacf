"""The test server's HA routes: ``/cluster/ha/resources``, ``/cluster/ha/rules`` (Proxmox VE 9 and
later) and ``/cluster/ha/groups``, answered from the scenario's ``ha`` object, which holds what
/etc/pve/ha/{resources,rules,groups}.cfg would: ``resources`` [{sid, state?, group?, ...}],
``rules`` [{rule, type, resources, nodes, strict?, disable?}], ``groups`` [{group, nodes,
restricted?}]. Each answer is shaped after the pve-ha-manager source named next to it. Imports
nothing of the engine."""

from __future__ import annotations

from typing import Any

from migration_guard.demo.pve_scenario import (
    ApiError,
    ClusterState,
    pve_version,
    require,
    version_tuple,
)

DIGEST = "5b1d4c7a0e9f2b3c4d5e6f708192a3b4c5d6e7f8"


def _ha(state: ClusterState) -> dict:
    return state.scenario.get("ha") or {}


def _groups_migrated(state: ClusterState) -> bool:
    # PVE/HA/Config.pm ``have_groups_been_migrated``: no group left in groups.cfg
    return not _ha(state).get("groups")


def _rules_era(state: ClusterState) -> bool:
    """HA rules came with pve-ha-manager 5.0 (Proxmox VE 9.0); before, the path does not exist."""
    return version_tuple(pve_version(state.scenario)) >= (9, 0)


def ha_resources(state: ClusterState, query: dict[str, str]) -> Any:
    # src/PVE/API2/HA/Resources.pm ``index``: Sys.Audit on /; one object per resources.cfg entry
    # with ``sid``, ``type``, ``digest``; ``group`` left out once the groups were migrated to rules,
    # ``errors.group`` for a group that does not exist
    require(state, "Sys.Audit", "/")
    groups = {g["group"] for g in _ha(state).get("groups", [])}
    migrated = _rules_era(state) and _groups_migrated(state)
    rows = []
    for res in _ha(state).get("resources", []):
        row = dict(res)
        row.setdefault("type", str(res["sid"]).partition(":")[0])
        row["digest"] = DIGEST
        if migrated:
            row.pop("group", None)
        elif row.get("group") and row["group"] not in groups:
            row["errors"] = {"group": f"group '{row['group']}' does not exist"}
        if query.get("type") and query["type"] != row["type"]:
            continue
        rows.append(row)
    return rows


def ha_rules(state: ClusterState, query: dict[str, str]) -> Any:
    # src/PVE/API2/HA/Rules.pm ``index`` (pve-ha-manager 5.0, Proxmox VE 9): Sys.Audit on /; the
    # rules in their order, with ``rule``, ``digest``, ``order``, default ``strict`` 0 set
    # (set_rule_defaults), and the groups not yet migrated as ``ha-group-<name>`` node-affinity
    # rules (PVE/HA/Groups.pm ``migrate_groups_to_rules``: strict = restricted)
    if not _rules_era(state):
        raise ApiError(501, "Method 'GET /cluster/ha/rules' not implemented")
    require(state, "Sys.Audit", "/")
    rows = []
    for order, rule in enumerate(_ha(state).get("rules", []), start=1):
        row = dict(rule)
        if row.get("type") == "node-affinity":
            row.setdefault("strict", 0)
        rows.append({**row, "digest": DIGEST, "order": order})
    members: dict[str, list[str]] = {}
    for res in _ha(state).get("resources", []):
        if res.get("group"):
            members.setdefault(res["group"], []).append(res["sid"])
    for group in _ha(state).get("groups", []):
        sids = members.get(group["group"])
        if not sids:
            continue
        rows.append(
            {
                "rule": f"ha-group-{group['group']}",
                "type": "node-affinity",
                "resources": ",".join(sorted(sids)),
                "nodes": group["nodes"],
                "strict": int(bool(group.get("restricted"))),
                "comment": group.get("comment") or f"Generated from HA group '{group['group']}'.",
                "digest": DIGEST,
                "order": len(rows) + 1,
            }
        )
    return rows


def ha_groups(state: ClusterState, query: dict[str, str]) -> Any:
    # src/PVE/API2/HA/Groups.pm ``index``: Sys.Audit on /; one object per groups.cfg entry with
    # ``group``, ``type`` group, ``nodes``, ``digest``; on Proxmox VE 9 once the groups were
    # migrated it dies "cannot index groups: ha groups have been migrated to rules" (HTTP 500)
    require(state, "Sys.Audit", "/")
    if _rules_era(state) and _groups_migrated(state):
        raise ApiError(500, "cannot index groups: ha groups have been migrated to rules")
    return [{**g, "type": "group", "digest": DIGEST} for g in _ha(state).get("groups", [])]
