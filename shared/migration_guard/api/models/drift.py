"""The models of the drift alarm (``GET /v1/drift``): a node's CPU facts changed between two
inventory refreshes."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from migration_guard.api.models import Answer


class DriftVm(Answer):
    vmid: int
    name: str
    cpu: str
    direction: str = Field(description="to: onto the drifted node; from: off it")
    node: str = Field(description="the VM's node (direction to) or the target (direction from)")
    reason: str | None = Field(default=None, description="why it is blocked now (blocked only)")


class DriftEventOut(Answer):
    id: str
    kind: str = Field(description="drift")
    time: str = Field(description="when the change was seen (ISO 8601 UTC)")
    cluster: str
    node: str
    appeared: list[str] = Field(description="flags the node offers now and did not before")
    vanished: list[str] = Field(description="flags the node offered before and no longer does")
    qemu_before: str | None
    qemu_after: str | None
    changed: dict[str, list[Any]] = Field(
        description="other facts that changed (qemu_version, pve_version, cpu_model, phys_bits): "
        "[before, after]"
    )
    vms_now_blocked: list[DriftVm]
    vms_now_movable: list[DriftVm]


class DriftBody(Answer):
    """The latest drift events of the cluster, newest first."""

    cluster: str
    events: list[DriftEventOut]
