"""The models of the what-if question (``/v1/cluster/recommendation?add=...&remove=...``, its POST
form with host data) and of the shipped CPUs it names (``GET /v1/cpus``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from migration_guard.api.models import Answer, RecommendationBody
from migration_guard.api.models.custom_model import CustomModelBody


class ShippedCpuOut(Answer):
    name: str = Field(description="what add= takes, e.g. 'EPYC 9654', 'Xeon Gold 6230', 'Atom C3758'")
    id: str = Field(description="the data file's name (also accepted by add=)")
    model_name: str = Field(description="/proc/cpuinfo's model name")
    vendor: str
    family: int | None
    model: int | None
    level: str = Field(description="the best x86-64-vN level its KVM runs (x86-64-v1: none of Proxmox's)")
    source: str = Field(description="where the /proc/cpuinfo dump comes from")
    note: str


class CpusBody(Answer):
    """The real CPUs the service ships (first processor of a public /proc/cpuinfo dump each)."""

    cpus: list[ShippedCpuOut]


class HostIn(BaseModel):
    """A node's CPU as data: what ``migration-guard cpu`` reads from a host file."""

    name: str = Field(min_length=1, max_length=63)
    vendor: str | None = Field(default=None, max_length=32)
    model: str = Field(default="", max_length=256)
    flags: list[str] = Field(min_length=1, max_length=1024)
    bugs: list[str] | None = Field(default=None, max_length=256)
    flag_source: str = Field(default="cpuinfo", max_length=16)
    family: int | None = None
    model_number: int | None = None
    phys_bits: int | None = Field(default=None, ge=8, le=64, description="physical address width")


class WhatIfRequest(BaseModel):
    """``POST /v1/cluster/recommendation``: the what-if question with hosts given as data."""

    nodes: list[str] | None = Field(default=None, max_length=256)
    add: list[str] = Field(default_factory=list, max_length=16)
    remove: list[str] = Field(default_factory=list, max_length=256)
    hosts: list[HostIn] = Field(default_factory=list, max_length=16)


class AddedNode(Answer):
    node: str = Field(description="the imagined node's name, e.g. new-epyc-9654")
    cpu_model: str
    vendor: str | None
    flag_source: str


class Lacks(Answer):
    node: str
    missing: list[str]
    reason: str | None = Field(default=None, description="why, when not missing features (vendor)")


class VmChange(Answer):
    vmid: int
    name: str
    node: str
    cpu: str
    cannot_run_on: list[Lacks]
    can_move_to: list[str]


class WhatIfBlock(Answer):
    """The cluster after the change."""

    added: list[AddedNode]
    removed: list[str]
    nodes_after: list[str]
    recommended_before: str | None
    recommended_after: str | None
    ranked_after: list[str]
    reason_after: str | None
    would_break: list[VmChange] = Field(description="VMs whose CPU type would no longer run on every node")
    would_gain: list[VmChange] = Field(description="VMs whose CPU type would then run on every node")
    must_move: list[VmChange] = Field(description="VMs on a removed node, with where their type runs")
    blocked_on_added: list[VmChange] = Field(
        description="VMs some node cannot run today that an added node cannot run either"
    )
    summary: str
    custom_model: CustomModelBody | None = Field(
        default=None,
        description="the cluster's best custom CPU model after the change, as GET "
        "/v1/cluster/custom-model answers it for the nodes after the change",
    )


class RecommendationWhatIfBody(RecommendationBody):
    """The recommendation; with ``add``/``remove`` also ``what_if``, the cluster after that change."""

    what_if: WhatIfBlock | None = None
