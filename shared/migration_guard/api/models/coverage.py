"""``GET /v1/coverage``: the VMs the guard does not protect."""

from __future__ import annotations

from pydantic import BaseModel


class UnguardedVm(BaseModel):
    vmid: int
    name: str
    node: str
    status: str
    #: the VM's other hookscript (volume id), null when it has none
    hookscript: str | None


class SkippedVm(BaseModel):
    vmid: int
    name: str
    node: str
    status: str
    #: why it is left unguarded on purpose (``tagged migration-guard-skip``)
    why: str


class MissingVolumeVm(BaseModel):
    vmid: int
    name: str
    node: str
    status: str
    hookscript: str
    #: online nodes whose storage does not list the hookscript file: the VM cannot start there
    missing_on: list[str]


class UnreadableVm(BaseModel):
    vmid: int
    node: str
    error: str


class CoverageBody(BaseModel):
    cluster: str
    checked_at: str
    #: VMs considered (templates left out: they never start)
    vms: int
    #: VMs whose hookscript is the guard's
    guarded: int
    unguarded: list[UnguardedVm]
    skipped: list[SkippedVm]
    unreadable: list[UnreadableVm]
    missing_volume: list[MissingVolumeVm]
    #: ``done``, or ``skipped: <why>`` (the Proxmox token cannot list the nodes' snippets)
    volume_check: str
    #: offline nodes: not asked for their snippets
    nodes_not_asked: list[str]
