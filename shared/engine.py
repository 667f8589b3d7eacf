"""The compatibility engine: pure functions over plain data, no I/O.

CONTRACT (other modules rely on these names; the engine owner fills in the bodies).
Reason codes are stable strings; the service adds its own (target-offline,
machine-unsupported, local-resources, storage-unavailable, bypassed,
cluster-unreachable, source-unknown, flags-unknown, precheck-skipped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .cpu_spec import CpuSpec
from .hosts import HostCpu

VerdictKind = Literal["allow", "deny", "unknown"]


@dataclass(frozen=True, slots=True)
class Reason:
    code: str       # "missing-flags", "vendor-mismatch", "unknown-model", "passthrough-caution", ...
    message: str    # one sentence for an operator


@dataclass(frozen=True, slots=True)
class RunVerdict:
    cpu: str                    # the spec as given
    host: str
    runnable: bool
    missing: tuple[str, ...]    # Linux names, sorted
    model: str                  # the resolved model (e.g. "Skylake-Server-v1")
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True, slots=True)
class MigrationVerdict:
    verdict: VerdictKind
    reasons: tuple[Reason, ...]
    suggestion: str | None
    cpu: str
    model: str
    missing: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Blocked:
    type: str
    host: str
    missing: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Recommendation:
    recommended: str | None
    ranked: tuple[str, ...]         # best first; every type runs on every host
    blocked: tuple[Blocked, ...]    # better types that fail, with the host and what it lacks


def check_runnable(spec: CpuSpec, host: HostCpu) -> RunVerdict:
    raise NotImplementedError


def check_migration(spec: CpuSpec, source: HostCpu | None, target: HostCpu, *, running: bool = True) -> MigrationVerdict:
    """source None = unknown source (cross-cluster): named types judged on target alone,
    passthrough types -> unknown with code source-unknown."""
    raise NotImplementedError


def recommend(hosts: Sequence[HostCpu]) -> Recommendation:
    raise NotImplementedError
