"""A verdict as the service answers it: the HTTP status, the JSON body (built once, an unchanged
verdict reuses its serialised part), and the one judgement of a pair of nodes."""

from __future__ import annotations

import json

from migration_guard.engine.checks import Verdict, evaluate, verdict_body
from migration_guard.engine.facts import NodeFacts, Precondition, VmFacts


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


def _judge(vm: VmFacts, source: NodeFacts, target: NodeFacts, pre: Precondition | None) -> Verdict:
    """``checks.evaluate`` for a source node the service reads: offline, its CPU is not known."""
    if source.online:
        return evaluate(vm, source, target, pre)
    return evaluate(vm, None, target, pre, source_known=False)
