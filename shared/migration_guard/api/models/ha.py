"""HA recovery risks (``HaRisksBody``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from migration_guard.api.models import Answer


class HaRiskNode(Answer):
    node: str
    verdict: Literal["deny", "unknown"]
    reason: str = Field(description="the deciding reason code")
    message: str
    fallback: bool = Field(description="HA uses this node only when none of the rule's nodes is online")


class HaRisk(Answer):
    """An HA VM that HA may start on a node that cannot run it (or cannot be judged)."""

    vmid: int
    name: str
    node: str = Field(description="where it runs now")
    cpu: str | None
    ha_state: str
    rule_or_group: str | None
    strict: bool
    nodes: list[HaRiskNode]


class HaRisksBody(Answer):
    """For each HA VM that HA starts again after a failure, the nodes it may start it on that
    cannot run its CPU type."""

    cluster: str
    source: Literal["rules", "groups", "none"] = Field(
        description="rules (Proxmox VE 9), groups (before), none (no HA-managed VM)"
    )
    ha_vms: int = Field(description="the VMs HA manages")
    risks: list[HaRisk]
    checked_at: str
