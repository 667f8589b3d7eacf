"""Audited one-time overrides in the store: an operator asks that one migration (VM and target node)
pass although the guard denies it; a second person approves; the next denied decision for that VM
and target within the override's lifetime is allowed and spends it.

Keys (Redis, beside the decision log):

- ``migration-guard:override:<id>``: the override as JSON, with ``history``, every state change
  (who, when, which state); kept ``KEEP_S`` after its request.
- ``migration-guard:overrides``: sorted set of the ids by request time (the list, newest first).
- ``migration-guard:override-armed:<vmid>:<target>``: the id of the approved override of that VM and
  target, expiring with it; at most one per VM and target.

Every change is one Redis transaction (WATCH the keys read, MULTI/EXEC the writes, again on a
conflict): of two decisions at the same moment exactly one spends an override, of two approvals
exactly one approves. The states: ``pending`` -> ``approved`` -> ``spent``; ``pending`` or
``approved`` -> ``expired`` (its lifetime, counted from the request, ran out) or ``rejected``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from redis.exceptions import WatchError

from migration_guard.errors import ConflictError, NotFoundError
from migration_guard.store.events import iso_utc, new_id
from migration_guard.store.redis_store import Store

RECORD = "migration-guard:override:{id}"
INDEX = "migration-guard:overrides"
ARMED = "migration-guard:override-armed:{vmid}:{target}"
#: how long an override's record (and its history) is kept after its request: 90 days
KEEP_S = 90 * 86400
#: the states an override can be in
STATUSES = ("pending", "approved", "spent", "expired", "rejected")
#: the fields of an override as the API answers it (the stored record has ``expires_ts`` too)
PUBLIC = (
    "id",
    "vmid",
    "target",
    "reason",
    "requested_by",
    "approved_by",
    "status",
    "created_at",
    "expires_at",
    "spent_at",
    "decision_id",
    "ttl_s",
    "history",
)


def same_person(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def public(record: dict) -> dict:
    return {k: record.get(k) for k in PUBLIC}


class UnknownOverride(NotFoundError):
    code = "unknown-override"


class OverrideStore:
    """The overrides of one service, in its store (``clock``: the service's clock)."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    async def create(self, vmid: int, target: str, reason: str, ttl_s: int, requested_by: str) -> dict:
        now = self.clock()
        record: dict[str, Any] = {
            "id": new_id(now),
            "vmid": int(vmid),
            "target": target,
            "reason": reason,
            "requested_by": requested_by,
            "approved_by": None,
            "status": "pending",
            "created_at": iso_utc(now),
            "expires_at": iso_utc(now + ttl_s),
            "expires_ts": now + ttl_s,
            "spent_at": None,
            "decision_id": None,
            "ttl_s": int(ttl_s),
            "history": [{"status": "pending", "at": iso_utc(now), "by": requested_by}],
        }
        key = RECORD.format(id=record["id"])

        async def write(r: Any) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.set(key, json.dumps(record), ex=KEEP_S)
            pipe.zadd(INDEX, {record["id"]: now})
            pipe.zremrangebyscore(INDEX, "-inf", now - KEEP_S)  # records gone with their keys
            await pipe.execute()

        await self.store.run(write)
        return public(record)

    async def get(self, override_id: str) -> dict:
        raw = await self.store.run(lambda r: r.get(RECORD.format(id=override_id)))
        if raw is None:
            raise UnknownOverride(
                f"there is no override {override_id[:40]} (see migration-guard override list)"
            )
        return public(self._expired(json.loads(raw), self.clock()))

    async def overrides(self, limit: int = 100) -> list[dict]:
        """The newest ``limit`` overrides, newest first (an override whose lifetime ran out says
        ``expired``, and the state change is written down)."""
        ids = await self.store.run(lambda r: r.zrevrange(INDEX, 0, limit - 1))
        if not ids:
            return []
        raws = await self.store.run(lambda r: r.mget([RECORD.format(id=i) for i in ids]))
        now = self.clock()
        out = []
        for raw in raws:
            if raw is None:
                continue
            record = json.loads(raw)
            if record["status"] in ("pending", "approved") and now >= record["expires_ts"]:
                record = await self._change(record["id"], lambda rec, now, armed: None)
            out.append(public(record))
        return out

    @staticmethod
    def _expired(record: dict, now: float) -> dict:
        """``record`` with the state ``expired`` (and its history entry) when its lifetime ran out."""
        if record["status"] in ("pending", "approved") and now >= record["expires_ts"]:
            record["status"] = "expired"
            record["history"].append({"status": "expired", "at": record["expires_at"], "by": None})
        return record

    async def _change(self, override_id: str, change: Callable[[dict, float, str | None], Any]) -> dict:
        """Apply ``change(record, now, armed)`` (``armed``: the id armed for the override's VM and
        target, or None) in one transaction. ``change`` raises ConflictError to refuse (an expiry
        found on the way is written down all the same) and may return ("arm", ms) or ("disarm",)."""
        key = RECORD.format(id=override_id)

        async def txn(r: Any) -> dict:
            async with r.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        raw = await pipe.get(key)
                        if raw is None:
                            raise UnknownOverride(
                                f"there is no override {override_id[:40]} (see migration-guard override list)"
                            )
                        record = json.loads(raw)
                        armed = ARMED.format(vmid=record["vmid"], target=record["target"])
                        await pipe.watch(armed)
                        armed_id = await pipe.get(armed)
                        now = self.clock()
                        was = record["status"]
                        self._expired(record, now)
                        refusal: ConflictError | None = None
                        action: Any = None
                        try:
                            action = change(record, now, armed_id)
                        except ConflictError as exc:
                            refusal = exc
                        pipe.multi()
                        if record["status"] != was:
                            pipe.set(key, json.dumps(record), keepttl=True)
                        if action and action[0] == "arm":
                            pipe.set(armed, record["id"], px=action[1])
                        elif armed_id == record["id"] and record["status"] != "approved":
                            pipe.delete(armed)
                        await pipe.execute()
                        if refusal is not None:
                            raise refusal
                        return record
                    except WatchError:
                        continue

        result: dict = await self.store.run(txn)
        return result

    async def approve(self, override_id: str, approved_by: str) -> dict:
        def approve(record: dict, now: float, armed_id: str | None) -> tuple[str, int]:
            _refuse_unless_pending(record, "approved")
            if same_person(record["requested_by"], approved_by):
                raise ConflictError(
                    f"override {record['id']} was requested by {record['requested_by']}: a second "
                    "person must approve it",
                    code="override-self-approval",
                )
            if armed_id and armed_id != record["id"]:
                raise ConflictError(
                    f"override {armed_id} for VM {record['vmid']} to {record['target']} is already "
                    "approved and not spent; reject it first, or wait until it is spent or expires",
                    code="override-already-approved",
                )
            record["status"] = "approved"
            record["approved_by"] = approved_by
            record["history"].append({"status": "approved", "at": iso_utc(now), "by": approved_by})
            return ("arm", max(1, int((record["expires_ts"] - now) * 1000)))

        return public(await self._change(override_id, approve))

    async def reject(self, override_id: str, rejected_by: str) -> dict:
        def reject(record: dict, now: float, armed_id: str | None) -> None:
            if record["status"] != "approved":
                _refuse_unless_pending(record, "rejected")
            record["status"] = "rejected"
            record["history"].append({"status": "rejected", "at": iso_utc(now), "by": rejected_by})

        return public(await self._change(override_id, reject))

    async def spend(self, vmid: int, target: str, decision_id: str) -> dict | None:
        """The approved override of ``vmid`` to ``target``, spent by decision ``decision_id``; None
        when there is none (or it expired). Of two concurrent calls at most one gets it."""
        armed = ARMED.format(vmid=int(vmid), target=target)
        override_id = await self.store.run(lambda r: r.get(armed))
        if not override_id:
            return None

        # the armed key, watched, decides who spends: the first EXEC deletes it, the other's fails
        key = RECORD.format(id=override_id)

        async def txn(r: Any) -> dict | None:
            async with r.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(armed, key)
                        if await pipe.get(armed) != override_id:
                            return None
                        raw = await pipe.get(key)
                        if raw is None:
                            return None
                        record = json.loads(raw)
                        now = self.clock()
                        self._expired(record, now)
                        if record["status"] == "approved":
                            record["status"] = "spent"
                            record["spent_at"] = iso_utc(now)
                            record["decision_id"] = decision_id
                            record["history"].append(
                                {"status": "spent", "at": iso_utc(now), "by": f"decision {decision_id}"}
                            )
                        pipe.multi()
                        pipe.set(key, json.dumps(record), keepttl=True)
                        pipe.delete(armed)
                        await pipe.execute()
                        return record if record["status"] == "spent" else None
                    except WatchError:
                        continue

        record = await self.store.run(txn)
        return public(record) if record is not None else None


def _refuse_unless_pending(record: dict, wanted: str) -> None:
    status = record["status"]
    if status == "pending":
        return
    when = {
        "approved": f"by {record.get('approved_by')}",
        "spent": f"at {record.get('spent_at')} by decision {record.get('decision_id')}",
        "expired": f"at {record.get('expires_at')}; ask for a new one",
        "rejected": "",
    }.get(status, "")
    raise ConflictError(
        f"override {record['id']} cannot be {wanted}: it is already {status} {when}".rstrip(),
        code=f"override-{status}",
    )
