"""The models of the cluster's custom CPU model (``GET``/``POST /v1/cluster/custom-model``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from migration_guard.api.models import Answer


class LeftOutFlag(BaseModel):
    flag: str
    why: str


class GainsOver(BaseModel):
    #: the best of Proxmox's generic levels every node runs (x86-64-v4 .. kvm64)
    level: str | None
    #: the features the model has beyond that level (QEMU names)
    features: list[str]


class VmThatGains(BaseModel):
    vmid: int
    name: str
    node: str
    cpu: str
    gains: list[str]


class CustomModelBody(Answer):
    """The richest CPU every chosen node's KVM runs, as a Proxmox custom CPU model."""

    cluster: str
    name: str
    nodes: list[str]
    nodes_without_flags: list[str]
    reported_model: str
    #: each written +FLAG (QEMU names)
    flags: list[str]
    #: the narrowest node's physical address width; null when some node's width is unknown
    phys_bits: int | None
    left_out: list[LeftOutFlag]
    #: the cpu-models.conf section, as Proxmox writes it
    section: str
    gains_over: GainsOver
    vms_that_gain: list[VmThatGains]
    notes: list[str]
    checked_at: str
    #: POST only: the model was created in Proxmox
    created: bool | None = None


class CustomModelRequest(BaseModel):
    """``POST /v1/cluster/custom-model``: create the model in Proxmox."""

    nodes: list[str] | None = Field(default=None, max_length=256)
    name: str = Field(default="cluster-baseline", max_length=48)
