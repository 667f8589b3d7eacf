"""The API's request and response models: the OpenAPI schema (GET /openapi.json) is the contract
every client reads, so no client guesses a shape. The routes that answer pre-serialised bytes
(the verdict's hot path) name their model in the schema only; the others are validated against
these models by the tests."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: the whole value, \A...\Z: ``$`` would let a trailing newline through
NODE_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9.-]{0,62}\Z")


# --- requests -------------------------------------------------------------------------------


class DecisionRequest(BaseModel):
    #: strict: a JSON integer only (not true, 101.0 or "101"); 100 to 999999999 as Proxmox's
    #: pve-vmid format (pve-common PVE/JSONSchema.pm)
    vmid: int = Field(ge=100, le=999_999_999, strict=True)
    target: str
    source: str | None = None
    mode: Literal["enforce", "warn"] = "enforce"
    smbios_uuid: str | None = Field(default=None, max_length=64)
    cpu: str | None = Field(default=None, max_length=1024)
    #: cross-cluster: the clusters of each side (default: the service's default cluster)
    source_cluster: str | None = Field(default=None, max_length=63)
    target_cluster: str | None = Field(default=None, max_length=63)

    @field_validator("target", "source", "source_cluster", "target_cluster")
    @classmethod
    def _node(cls, value: str | None) -> str | None:
        if value is not None and not NODE_NAME.match(value):
            raise ValueError(f"{value[:70]!r} is not a Proxmox node name")
        return value


# --- errors ---------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {"code", "message"[, "field"]}}``."""

    error: ErrorDetail


# --- verdicts -------------------------------------------------------------------------------


class Answer(BaseModel):
    """An answer object: the named fields are the contract; a later release may add fields."""

    model_config = ConfigDict(extra="allow")


class ReasonOut(BaseModel):
    code: str = Field(description="a stable reason code, e.g. missing-flags, vendor-mismatch")
    message: str = Field(description="one sentence for an operator")


class VerdictBody(Answer):
    """The verdict of one migration: may VM ``vmid`` live-migrate from ``source`` to ``target``."""

    vmid: int
    name: str
    source: str
    target: str
    source_cluster: str
    target_cluster: str
    verdict: Literal["allow", "deny", "unknown"]
    reasons: list[ReasonOut]
    cpu: str
    model: str
    missing: list[str] = Field(description="CPU flags the target lacks (Linux names)")
    suggestion: str | None
    flag_source: str
    pending_cpu: str | None = None
    facts: list[ReasonOut] | None = Field(
        default=None, description="notes on the facts judged (a nested node), never a verdict reason"
    )
    checked_at: str
    facts_age_s: float | None = Field(description="the age of the facts judged; null when none were read")
    stale: bool = Field(description="answered from facts older than their lifetime")


class OverrideUse(BaseModel):
    """The approved override that turned a deny into this allow (once; ``GET /v1/overrides``)."""

    id: str
    requested_by: str
    approved_by: str
    reason: str


class DecisionBody(VerdictBody):
    """The hook's decision: the verdict, recorded in the audit log (``decision_id``)."""

    override: OverrideUse | None = Field(
        default=None, description="the override that allowed this denied migration once"
    )

    decision_id: str
    mode: Literal["enforce", "warn"]
    exit: int = Field(description="the hookscript's exit code: 0 allow, 1-4 deny kinds, 5 unknown")
    code: str = Field(description="the deciding reason's code")
    line: str = Field(description="the one sentence for the Proxmox task log")
    recorded: bool
    event_queued: bool


class TargetError(Answer):
    cluster: str
    node: str | None = None
    code: str
    message: str


class TargetsBody(Answer):
    """The verdict of every other node (of every cluster with all_clusters) as a target."""

    vmid: int
    name: str
    source: str
    targets: list[VerdictBody]
    source_cluster: str | None = None
    clusters: list[str] | None = None
    errors: list[TargetError] | None = None


# --- decisions ------------------------------------------------------------------------------


class DecisionRecord(Answer):
    """One decision of the audit log (a failed one too: verdict unknown with the failure's code)."""

    id: str
    time: str
    vmid: int
    target: str
    verdict: Literal["allow", "deny", "unknown"]
    code: str
    exit: int
    line: str
    name: str | None = None
    source: str | None = None
    source_cluster: str | None = None
    target_cluster: str | None = None
    mode: str | None = None
    cpu: str | None = None
    reasons: list[ReasonOut] = []
    suggestion: str | None = None
    facts_age_s: float | None = None
    facts: list[ReasonOut] | None = None
    requested_source: str | None = Field(default=None, description="the source the hook named")
    smbios_uuid: str | None = None
    requested_cpu: str | None = Field(default=None, description="the cpu the hook named")
    status: int | None = Field(default=None, description="a failed decision: the HTTP status answered")
    override: OverrideUse | None = Field(
        default=None, description="the override that allowed this denied migration once"
    )


class DecisionsBody(BaseModel):
    """The audit log, newest first."""

    decisions: list[DecisionRecord]


# --- the cluster ----------------------------------------------------------------------------


class ClusterNode(Answer):
    name: str
    online: bool
    cluster: str | None = None
    error: str | None = Field(default=None, description="why the node's facts could not be read")
    cpu_model: str | None = None
    vendor: str | None = None
    #: the node's physical address width in bits (MIGRATION_GUARD_NODE_PHYS_BITS, else the recorded
    #: dump of the same CPU model); null when unknown
    phys_bits: int | None = None
    best_cpu_type: str | None = None
    best_cpu_note: str | None = None
    flag_source: str | None = None
    pve_version: str | None = None
    kernel_version: str | None = None
    qemu_version: str | None = None
    cpu_types_from: str | None = None
    facts_age_s: float | None = None
    note: str | None = None


class RollingUpgrade(Answer):
    mixed: bool
    releases: dict[str, list[str]]
    newest: str
    message: str


class ClusterView(Answer):
    cluster: str
    nodes: list[ClusterNode]
    checked_at: str
    rolling_upgrade: RollingUpgrade | None = Field(
        description="the nodes' Proxmox releases while they differ, else null"
    )


class Blocked(Answer):
    type: str
    node: str
    missing: list[str]


class CannotRun(Answer):
    node: str
    missing: list[str]
    type_unknown: bool | None = None


class VmAtRisk(Answer):
    vmid: int
    name: str
    node: str
    cpu: str
    cannot_run_on: list[CannotRun]


class RecommendationBody(Answer):
    """The CPU type every named (or every online) node runs."""

    cluster: str
    nodes: list[str]
    nodes_without_flags: list[str]
    recommended: str | None
    ranked: list[str]
    reason: str | None
    blocked: list[Blocked]
    vms_at_risk: list[VmAtRisk]
    checked_at: str
    notes: list[str] | None = None


class MatrixCell(BaseModel):
    verdict: Literal["allow", "deny", "unknown"]
    code: str
    exit: int


class MatrixRow(Answer):
    vmid: int
    name: str
    node: str
    status: str
    cpu: str
    tags: list[str] = Field(default=[], description="the VM's Proxmox tags")
    targets: dict[str, MatrixCell] = Field(description="the verdict per target node")


class MatrixBody(Answer):
    """Every VM against every other node."""

    cluster: str
    nodes: list[str]
    vms: list[MatrixRow]
    note: str
    checked_at: str


# --- health ---------------------------------------------------------------------------------


class Healthz(BaseModel):
    status: Literal["ok"]


class Readyz(Answer):
    """The state; the details only with a valid bearer token."""

    status: Literal["ready", "degraded", "not ready"]
    degraded: bool | None = None
    store: str | None = None
    redis: Literal["ok", "down"] | None = None
    proxmox: Literal["ok", "unreachable"] | None = None
    events_pending: int | None = None
    redis_error: str | None = None
    proxmox_error: str | None = None
    clusters: dict[str, str] | None = Field(default=None, description="the other clusters: ok or why not")
