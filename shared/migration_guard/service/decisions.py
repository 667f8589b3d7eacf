"""The hook's decisions: a verdict becomes a decision record (``GET /v1/decisions``), a veto
becomes an event on the stream (Slack), vetoes in a row are counted (HA retries), and a check
that failed on Proxmox is recorded too, so the audit log says why no verdict was given."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from migration_guard.errors import GuardError, ProxmoxError, ProxmoxUnreachable, StoreUnavailable
from migration_guard.service.metrics import Metrics
from migration_guard.service.outcome import Outcome
from migration_guard.store.events import EventLog, iso_utc, new_id
from migration_guard.store.overrides import OverrideStore
from migration_guard.store.redis_store import Store
from migration_guard.store.stream import VetoEvent

log = logging.getLogger("migration_guard.decisions")

#: vetoes of one VM toward one target count as one run while no gap is longer than this (HA's CRM
#: retries a vetoed migration every round, ~10 s, while the source node is in maintenance)
REPEAT_WINDOW_S = 600.0
REPEAT_KEY = "migration-guard:vetoes:{key}"


def repeat_advice(count: int, first: float, source: str) -> str:
    """What the hook line adds to a veto that repeats: HA keeps trying, and what stops it (the
    line's suggestion, when there is one, names a CPU type both nodes run)."""
    since = time.strftime("%H:%M", time.gmtime(first))
    return (
        f"blocked {count} times since {since} UTC; HA retries until {source or 'the source node'} "
        "leaves maintenance or the CPU type changes: set a CPU type both nodes run and restart "
        "the VM, or migrate it by hand to a node that runs it"
    )


def _overridden(body: dict, override: dict, line: str) -> str:
    """Turns the denied ``body`` into the allow an approved override grants (``override`` in the
    body, a reason saying so); -> the hook's line: who allowed it, and what the guard had said."""
    body["verdict"] = "allow"
    body["override"] = {
        "id": override["id"],
        "requested_by": override["requested_by"],
        "approved_by": override["approved_by"],
        "reason": override["reason"],
    }
    who = (
        f"override {override['id']} (requested by {override['requested_by']}, approved by "
        f"{override['approved_by']}: {override['reason']})"
    )
    body["reasons"].append({"code": "override", "message": f"allowed once by {who}"})
    return f"allowed once by {who}; the guard said: {line}"


def _requested(request: dict) -> dict:
    """The record's fields that repeat what the caller asked."""
    return {
        "requested_source": request.get("source"),
        "smbios_uuid": request.get("smbios_uuid"),
        "requested_cpu": request.get("cpu"),
    }


class Decisions:
    """Decides for the hook (``POST /v1/decisions``) with the verdict ``check`` gives, records the
    decision, publishes a veto and counts vetoes in a row."""

    def __init__(
        self,
        cluster: str,
        store: Store,
        events: EventLog,
        metrics: Metrics,
        clock: Callable[[], float],
        check: Callable[[dict, float | None], Awaitable[Outcome]],
        overrides: OverrideStore | None = None,
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.events = events
        self.metrics = metrics
        self.clock = clock
        self.check = check
        self.overrides = overrides
        #: (source cluster, vmid, target cluster, target) -> (first, count, last): vetoes in a row,
        #: used while Redis is down (Redis keeps them for every service process otherwise)
        self._repeats: dict[tuple, tuple[float, int, float]] = {}

    async def decide(self, request: dict, *, budget_s: float | None = None) -> Outcome:
        vmid, target = int(request["vmid"]), str(request["target"])
        try:
            outcome = await self.check(request, budget_s)
        except ProxmoxError as exc:
            # Proxmox refused or answered nonsense (HTTP 502): the hook falls back to its fail
            # policy, and the audit log says why no verdict was given
            await self._record_failure(request, exc)
            raise
        body, verdict = outcome.body, outcome.verdict
        now = self.clock()
        decision_id = new_id(now)
        mode = request.get("mode") or "enforce"
        body["decision_id"] = decision_id
        body["mode"] = mode
        exit_code = verdict.exit_code if verdict else 5
        code = verdict.deny_code if verdict else "cluster-unreachable"
        line = verdict.log_line() if verdict else f"could not judge the migration of VM {vmid} to {target}"
        if body["verdict"] == "deny" and mode == "enforce" and self._local(request):
            override = await self._spend_override(vmid, target, decision_id)
            if override is not None:
                exit_code, code, line = 0, "override", _overridden(body, override, line)
        repeats: tuple[int, float] | None = None
        if body["verdict"] == "deny" and mode == "enforce":
            repeats = await self._count_veto(body, target, now)
            if repeats[0] > 1:
                advice = repeat_advice(repeats[0], repeats[1], body.get("source", ""))
                # before any note: what to do must survive the hook's cut of a long line
                head, sep, notes = line.partition("; note: ")
                line = f"{head}; {advice}{sep}{notes}"
        record = self._record(request, body, decision_id, now, code=code, exit_code=exit_code, line=line)
        self.metrics.decisions.labels(body["verdict"]).inc()
        veto = self._veto(record, body, repeats) if body["verdict"] == "deny" else None
        recorded, published = await self.events.record_and_publish(record, veto)
        body["event_queued"] = not published
        body["recorded"] = recorded
        if not published:
            body["reasons"].append(
                {
                    "code": "event-queued",
                    "message": "Redis is down: the veto event is kept in memory and sent to Slack "
                    "once Redis is back",
                }
            )
        body["exit"] = exit_code
        body["code"] = code
        body["line"] = line
        return outcome

    def _local(self, request: dict) -> bool:
        """Overrides name a VM and a node of this service's own cluster."""
        return self.overrides is not None and all(
            request.get(k) in (None, "", self.cluster) for k in ("source_cluster", "target_cluster")
        )

    async def _spend_override(self, vmid: int, target: str, decision_id: str) -> dict | None:
        """The approved override of this VM and target, spent now; None when there is none, or
        when Redis cannot say (the veto stands: an override is never assumed)."""
        assert self.overrides is not None
        try:
            return await self.overrides.spend(vmid, target, decision_id)
        except StoreUnavailable as exc:
            log.warning("overrides not read for VM %s to %s (%s): the veto stands", vmid, target, exc)
            return None

    def _record(
        self, request: dict, body: dict, decision_id: str, now: float, *, code: str, exit_code: int, line: str
    ) -> dict:
        """The decision record of a verdict (``GET /v1/decisions``)."""
        return {
            "id": decision_id,
            "time": iso_utc(now),
            "vmid": int(request["vmid"]),
            "name": body.get("name", ""),
            "source": body.get("source", ""),
            "target": str(request["target"]),
            "source_cluster": body.get("source_cluster", self.cluster),
            "target_cluster": body.get("target_cluster", self.cluster),
            "verdict": body["verdict"],
            "code": code,
            "exit": exit_code,
            "mode": body["mode"],
            "cpu": body.get("cpu", ""),
            "reasons": list(body["reasons"]),
            "suggestion": body.get("suggestion"),
            "line": line,
            "facts_age_s": body.get("facts_age_s"),
            "facts": list(body.get("facts") or ()),
            **({"override": body["override"]} if body.get("override") else {}),
            **_requested(request),
        }

    @staticmethod
    def _veto(record: dict, body: dict, repeats: tuple[int, float] | None) -> VetoEvent:
        """The veto event for the stream (the bot posts it to Slack)."""
        reasons = list(body["reasons"]) + list(body.get("facts") or ())  # a nested node: say so
        event: VetoEvent = {
            "id": record["id"],
            "time": record["time"],
            "vmid": record["vmid"],
            "name": record["name"],
            "source": record["source"],
            "target": record["target"],
            "source_cluster": record["source_cluster"],
            "target_cluster": record["target_cluster"],
            "cpu": record["cpu"],
            "verdict": "deny",
            "reasons": reasons,
            "suggestion": record["suggestion"],
            "enforced": record["mode"] == "enforce",
        }
        if repeats is not None:  # the Slack message of this VM and target shows the running count
            event["repeat"] = {"count": repeats[0], "since": iso_utc(repeats[1])}
        return event

    async def _record_failure(self, request: dict, exc: GuardError) -> None:
        now = self.clock()
        vmid, target = int(request["vmid"]), str(request["target"])
        line = f"could not judge the migration of VM {vmid} to {target}: {exc}"
        record = {
            "id": new_id(now),
            "time": iso_utc(now),
            "vmid": vmid,
            "name": "",
            "source": request.get("source") or "",
            "target": target,
            "source_cluster": request.get("source_cluster") or self.cluster,
            "target_cluster": request.get("target_cluster") or self.cluster,
            "verdict": "unknown",
            "code": exc.code,
            "exit": 5,
            "mode": request.get("mode") or "enforce",
            "cpu": "",
            "reasons": [{"code": exc.code, "message": str(exc)}],
            "suggestion": None,
            "line": line,
            "facts_age_s": None,
            **_requested(request),
            "status": 503 if isinstance(exc, ProxmoxUnreachable) else 502,
        }
        self.metrics.decisions.labels("unknown").inc()
        await self.events.record(record)

    async def _count_veto(self, body: dict, target: str, now: float) -> tuple[int, float]:
        """(how many vetoes of this VM toward ``target`` in a row, when the first was): in Redis for
        every service process (its key expires REPEAT_WINDOW_S after the last veto), in memory while
        Redis is down. A gap over REPEAT_WINDOW_S starts anew."""
        parts = (
            body.get("source_cluster") or self.cluster,
            body["vmid"],
            body.get("target_cluster") or self.cluster,
            target,
        )
        key = REPEAT_KEY.format(key=":".join(str(p) for p in parts))

        def bump(pipe: Any) -> None:
            # no WATCH, no MULTI: HINCRBY counts atomically and HSETNX keeps the first time, in
            # whatever order other callers' commands land; pipelined with the other decisions of
            # the moment (a node evacuation's burst shares a few round trips); the run ends when
            # the key expires (REPEAT_WINDOW_S after the last)
            pipe.hincrby(key, "count", 1)
            pipe.hsetnx(key, "first", repr(now))
            pipe.hget(key, "first")
            pipe.pexpire(key, int(REPEAT_WINDOW_S * 1000))

        if self.store.kind != "redis":
            # the embedded store lives and dies with this process: the count needs no store round
            # trip (a six-command transaction through the embedded Redis was most of a veto's CPU)
            return self._count_here(parts, now)
        try:
            count, _, first, _ = await self.store.batched(bump)
            return int(count), float(first)
        except Exception:  # noqa: BLE001 - Redis down or odd: the count, never the decision, suffers
            return self._count_here(parts, now)

    def _count_here(self, parts: tuple, now: float) -> tuple[int, float]:
        """The count of vetoes in a row kept in this process (the embedded store, or Redis down)."""
        seen = self._repeats.get(parts)
        if seen is None or now - seen[2] > REPEAT_WINDOW_S:
            seen = (now, 0, now)
        seen = (seen[0], seen[1] + 1, now)
        if len(self._repeats) > 10_000:
            self._repeats.clear()
        self._repeats[parts] = seen
        return seen[1], seen[0]
