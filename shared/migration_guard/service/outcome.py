"""A verdict as the service answers it: the HTTP status, the JSON body (built once, an unchanged
verdict reuses its serialised part), and the one judgement of a pair of nodes."""

from __future__ import annotations

import json

from migration_guard.engine.checks import Verdict, evaluate, verdict_body
from migration_guard.engine.facts import NodeFacts, Precondition, VmFacts
from migration_guard.engine.verdicts import Reason
from migration_guard.errors import NodeUnreachable, ProxmoxBadAnswer, ProxmoxUnreachable

#: the Proxmox faults that become an ``unknown`` verdict (HTTP 503) instead of an error answer
UNREACHABLE = (ProxmoxUnreachable, ProxmoxBadAnswer)


def dumps(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class Outcome:
    """A verdict and the HTTP status it is answered with (503 when the cluster is unreachable).
    The JSON body is built on first use; an unchanged verdict reuses its serialised part."""

    __slots__ = ("verdict", "status", "checked_at", "age", "_body", "_prefix")

    def __init__(
        self,
        verdict: Verdict | None,
        *,
        status: int = 200,
        body: dict | None = None,
        checked_at: str = "",
        age: float = 0.0,
        prefix: bytes | None = None,
    ) -> None:
        self.verdict = verdict
        self.status = status
        self.checked_at = checked_at
        self.age = age
        self._body = body
        self._prefix = prefix

    @property
    def body(self) -> dict:
        if self._body is None:
            assert self.verdict is not None
            self._body = verdict_body(self.verdict, checked_at=self.checked_at, facts_age_s=self.age)
            self._body["stale"] = False
        return self._body

    def json_bytes(self) -> bytes:
        if self._body is None and self._prefix is not None:
            tail = f',"checked_at":"{self.checked_at}","facts_age_s":{round(self.age, 1)!r},"stale":false}}'
            return self._prefix + tail.encode()
        return dumps(self.body)


def _prefix_of(verdict: Verdict) -> bytes:
    """The verdict body serialised without its last three fields (checked_at, facts_age_s, stale)."""
    body = verdict_body(verdict, checked_at="", facts_age_s=0.0)
    del body["checked_at"], body["facts_age_s"]
    return dumps(body)[:-1]


def _judge(
    vm: VmFacts, source: NodeFacts, target: NodeFacts, pre: Precondition | None, *, suggest: bool = True
) -> Verdict:
    """``checks.evaluate`` for a source node the service reads: offline, its CPU is not known.
    ``suggest`` False: no suggestion on a deny (the matrix shows none)."""
    if source.online:
        return evaluate(vm, source, target, pre, suggest=suggest)
    return evaluate(vm, None, target, pre, source_known=False, suggest=suggest)


def unreachable_reason(exc: BaseException) -> Reason:
    """Why a fault of ``UNREACHABLE`` leaves no verdict: the one wording of each."""
    if isinstance(exc, ProxmoxBadAnswer):
        return Reason("proxmox-bad-answer", f"Proxmox's answer cannot be judged with: {exc}")
    if isinstance(exc, NodeUnreachable):
        return Reason("node-unreachable", f"no facts about the node to judge with: {exc}")
    return Reason("cluster-unreachable", f"no facts about the cluster to judge with: {exc}")


def unknown_outcome(
    vmid: int,
    target: str,
    checked_at: str,
    *,
    exc: BaseException | None = None,
    reason: Reason | None = None,
    vm: VmFacts | None = None,
    source: str = "",
    source_cluster: str,
    target_cluster: str,
) -> Outcome:
    """The ``unknown`` verdict (HTTP 503) when Proxmox gave no facts to judge with: the one place
    ProxmoxUnreachable, NodeUnreachable and ProxmoxBadAnswer (``exc``), or an explicit ``reason``
    (the caller's time ran out), become a verdict."""
    if reason is None:
        assert exc is not None
        reason = unreachable_reason(exc)
    verdict = Verdict(
        vmid=vmid,
        name=vm.name if vm else "",
        source=source or (vm.node if vm else ""),
        target=target,
        verdict="unknown",
        reasons=(reason,),
        cpu=(vm.cpu or "kvm64") if vm else "",
        model="",
        suggestion=None,
        flag_source="none",
        source_cluster=source_cluster,
        target_cluster=target_cluster,
    )
    body = verdict_body(verdict, checked_at=checked_at, facts_age_s=0.0)
    body["facts_age_s"] = None
    body["stale"] = False
    return Outcome(verdict, status=503, body=body)
