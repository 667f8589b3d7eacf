"""Drift in the store: the last CPU facts seen of each node (its fingerprint, engine/drift.py) and
the list of drift events (``GET /v1/drift``).

Keys (next to the facts cache, in the same Redis):

- ``migration-guard:drift:facts:<cluster>:<node>``: the node's last fingerprint, as JSON, kept
  until it changes (a node that stays away for weeks is still compared when it comes back);
- ``migration-guard:drift``: a stream of drift events (field ``event``, JSON), the newest
  ``KEEP`` kept.

An event and the fingerprint it leads to are written in one transaction: a refresh that dies
between the two neither loses the event nor reports it twice."""

from __future__ import annotations

import json
from typing import Any

from migration_guard.store.redis_store import Store

DRIFT_STREAM = "migration-guard:drift"
FACTS_KEY = "migration-guard:drift:facts:{cluster}:{node}"
#: drift events kept in the list
KEEP = 1000


class DriftStore:
    def __init__(self, store: Store, cluster: str) -> None:
        self.store = store
        self.cluster = cluster

    def _key(self, node: str) -> str:
        return FACTS_KEY.format(cluster=self.cluster, node=node)

    async def last(self, nodes: list[str]) -> dict[str, dict[str, Any] | None]:
        """Node -> its last fingerprint (None: never seen, or the stored one is unreadable).
        Raises StoreUnavailable."""
        if not nodes:
            return {}
        raw = await self.store.run(lambda r: r.mget([self._key(n) for n in nodes]))
        out: dict[str, dict[str, Any] | None] = {}
        for node, text in zip(nodes, raw, strict=True):
            try:
                value = json.loads(text) if text else None
            except ValueError:
                value = None
            out[node] = value if isinstance(value, dict) else None
        return out

    async def baseline(self, node: str, facts: dict[str, Any]) -> None:
        """Remember ``facts`` as the node's last ones (first sight, or a new flag source)."""
        text = json.dumps(facts, separators=(",", ":"))
        await self.store.run(lambda r: r.set(self._key(node), text))

    async def record(self, node: str, facts: dict[str, Any], event: dict[str, Any]) -> None:
        """The event and the node's new fingerprint, in one transaction. Raises StoreUnavailable."""
        text = json.dumps(facts, separators=(",", ":"))
        entry = json.dumps(event, separators=(",", ":"))

        async def write(r: Any) -> Any:
            pipe = r.pipeline(transaction=True)
            pipe.xadd(DRIFT_STREAM, {"event": entry}, maxlen=KEEP, approximate=True)
            pipe.set(self._key(node), text)
            return await pipe.execute()

        await self.store.run(write)

    async def recent(self, limit: int = 50, node: str | None = None) -> list[dict[str, Any]]:
        """Newest first, this cluster's only. Raises StoreUnavailable."""
        batch = await self.store.run(lambda r: r.xrevrange(DRIFT_STREAM, count=KEEP))
        out = []
        for _entry, fields in batch:
            try:
                event = json.loads(fields.get("event", ""))
            except ValueError:
                continue
            if not isinstance(event, dict) or event.get("cluster") != self.cluster:
                continue
            if node is None or event.get("node") == node:
                out.append(event)
                if len(out) >= limit:
                    break
        return out
