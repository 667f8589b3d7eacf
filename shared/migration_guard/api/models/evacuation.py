"""The evacuation pre-flight of a node (``EvacuationBody``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from migration_guard.api.models import Answer

Verdict = Literal["allow", "deny", "unknown"]


class EvacuationSummary(Answer):
    vms: int = Field(description="VMs on the node (running and stopped; templates left out)")
    movable: int = Field(description="VMs with at least one allowed target")
    stuck: int = Field(description="VMs every target denies (or HA allows none)")
    unknown: int = Field(description="VMs with no allowed target and at least one unknown verdict")
    ha_managed: int


class EvacuationHa(Answer):
    """How HA places the VM; null when HA does not manage it."""

    managed: Literal[True]
    group_or_rule: str | None = Field(description="its node-affinity rule (PVE 9) or group; null: none")
    strict: bool = Field(description="strict rule / restricted group: never on another node")
    state: str = Field(description="HA's requested state (started, stopped, ...)")
    allowed_nodes: list[str] = Field(description="the nodes HA would move it to from this node")


class EvacuationTarget(Answer):
    node: str
    verdict: Verdict = Field(description="the verdict check gives (unknown when HA could not be read)")
    code: str = Field(description="the deciding reason code; empty for an allow")
    reasons: list[str] = Field(description="the reason codes")
    message: str = Field(description="the deciding reason, one sentence")


class EvacuationVm(Answer):
    vmid: int
    name: str
    cpu: str | None
    status: str
    ha: EvacuationHa | None
    targets: list[EvacuationTarget] = Field(description="HA-managed: only the nodes HA allows")
    allowed_targets: list[str]


class StuckVm(Answer):
    """A VM with nowhere to go, and what would let it move."""

    vmid: int
    name: str
    cpu: str | None
    status: str
    why: str = Field(description="one line")
    fix: str | None = Field(description="a CPU type running on this node and another one; null: none")
    fix_nodes: list[str] = Field(description="the other nodes the fix runs on")
    fix_why: str = Field(description="what to do with the fix, or why there is none")


class EvacuationBody(Answer):
    """Can the node go into maintenance: every VM on it against every node it could move to."""

    cluster: str
    node: str
    summary: EvacuationSummary
    stuck: list[StuckVm] = Field(description="the VMs with nowhere to go, first")
    vms: list[EvacuationVm]
    ha_source: Literal["rules", "groups", "none", "unknown"] = Field(
        description="where HA's placement was read from (unknown: it could not be read, see ha_error)"
    )
    ha_error: str | None = None
    checked_at: str
