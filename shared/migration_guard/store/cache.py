"""The facts cache: an in-process L1 in front of the store (Redis or embedded), single-flight
per resource, and stale-while-revalidate.

``FactsCache.get(key, ttl, load, codec)`` answers ``(value, age_s)``:

* L1 fresh (younger than ``ttl``): no I/O at all (the warm path of a check).
* else one loader per key at a time (single-flight: a burst of N asks for one resource makes
  one Proxmox call), after looking in the store (shared by every service instance);
* against Redis the single flight holds across processes (``serve --workers N``, several
  instances on one Redis): the process that takes the key's short lock (``SET NX PX``) reads
  Proxmox and writes the store; the others wait for that value in the store instead of reading
  Proxmox too (and read it themselves only if the lock holder fails or gives up);
* when the loader fails (Proxmox down, slow, failing with 5xx, refusing the token), or takes
  longer than ``stale_grace_s`` while an older value exists, the older value is answered with
  its age (stale-while-revalidate); the refresh goes on in the background;
* with no value at all the loader's error is raised.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

from migration_guard.engine.facts import NodeFacts, Precondition, VmFacts, VmSummary
from migration_guard.engine.hosts import HostCpu
from migration_guard.errors import (
    NodeUnreachable,
    ProxmoxError,
    ProxmoxNotFound,
    ProxmoxNotImplemented,
    ProxmoxPermissionError,
    StoreUnavailable,
)
from migration_guard.store.redis_store import Store

T = TypeVar("T")

KEY_PREFIX = "migration-guard:facts:"
LOCK_PREFIX = "migration-guard:lock:"
#: how often a process waiting for another's read looks in the store
FOLLOW_POLL_S = 0.01


# --- codecs: facts <-> JSON ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Codec(Generic[T]):
    encode: Callable[[T], Any]
    decode: Callable[[Any], T]


def _host_to(h: HostCpu | None) -> dict | None:
    if h is None:
        return None
    return {
        "name": h.name,
        "vendor": h.vendor,
        "model": h.model,
        "flags": sorted(h.flags),
        "flag_source": h.flag_source,
        "bugs": sorted(h.bugs) if h.bugs is not None else None,
        "family": h.family,
        "model_number": h.model_number,
        "phys_bits": h.phys_bits,
    }


def _host_from(d: dict | None) -> HostCpu | None:
    if d is None:
        return None
    return HostCpu(
        name=d["name"],
        vendor=d["vendor"],
        model=d["model"],
        flags=frozenset(d["flags"]),
        flag_source=d.get("flag_source", "cpuinfo"),
        bugs=frozenset(d["bugs"]) if d.get("bugs") is not None else None,
        family=d.get("family"),
        model_number=d.get("model_number"),
        phys_bits=d.get("phys_bits"),
    )


def node_to(n: NodeFacts) -> dict:
    d = {f: getattr(n, f) for f in NodeFacts.__slots__}
    d["cpu"] = _host_to(n.cpu)
    d["machines"] = list(n.machines)
    d["cpu_types"] = list(n.cpu_types)
    return d


def node_from(d: dict) -> NodeFacts:
    d = dict(d)
    d["cpu"] = _host_from(d.get("cpu"))
    d["machines"] = tuple(d.get("machines") or ())
    d["cpu_types"] = tuple(d.get("cpu_types") or ())
    return NodeFacts(**d)


def vm_to(v: VmFacts) -> dict:
    d = {f: getattr(v, f) for f in VmFacts.__slots__}
    d["tags"] = list(v.tags)
    return d


def vm_from(d: dict) -> VmFacts:
    d = dict(d)
    d["tags"] = tuple(d.get("tags") or ())
    return VmFacts(**d)


def _summary_from(d: dict) -> VmSummary:
    d = dict(d)
    d["tags"] = tuple(d.get("tags") or ())
    return VmSummary(**d)


def _pre_from(d: dict) -> Precondition:
    d = dict(d)
    for key in ("local_disks", "local_resources", "unavailable_storages", "unavailable_resources"):
        d[key] = tuple(d.get(key) or ())
    d["by_node"] = {
        str(node): (tuple(pair[0]), tuple(pair[1])) for node, pair in (d.get("by_node") or {}).items()
    }
    return Precondition(**d)


NODE = Codec(node_to, node_from)
NODES = Codec(lambda ns: [node_to(n) for n in ns], lambda ds: [node_from(d) for d in ds])
VM = Codec(vm_to, vm_from)
VMS = Codec(lambda vs: [asdict(v) for v in vs], lambda ds: [_summary_from(d) for d in ds])
PRECONDITION = Codec(asdict, _pre_from)
#: a node's VM statuses by vmid (one node-wide read, ``GET /nodes/{node}/qemu``)
NODE_VMS = Codec(
    lambda rows: {str(k): v for k, v in rows.items()},
    lambda d: {int(k): v for k, v in d.items()},
)
FLAGS = Codec(
    lambda m: None if m is None else {k: sorted(v) for k, v in m.items()},
    lambda d: None if d is None else {k: frozenset(v) for k, v in d.items()},
)


def facts_hash(node: NodeFacts) -> str:
    """What makes a node's verdicts change: online state, CPU model, flags and versions."""
    cpu = node.cpu
    text = "|".join(
        (
            node.cluster,
            node.name,
            str(node.online),
            node.cpu_model,
            node.flag_source,
            cpu.vendor if cpu else "",
            f"{cpu.family}/{cpu.model_number}/{cpu.phys_bits}" if cpu else "",
            " ".join(sorted(cpu.flags)) if cpu else "",
            " ".join(sorted(cpu.bugs)) if cpu and cpu.bugs is not None else "-",
            node.pve_version,
            node.kernel_version,
            node.qemu_version,
            " ".join(node.machines),
            node.cpu_types_source,
            " ".join(sorted(node.cpu_types)),
        )
    )
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


# --- the cache ------------------------------------------------------------------------------


@dataclass(slots=True)
class CacheStats:
    l1_hits: int = 0
    store_hits: int = 0
    loads: int = 0
    stale_answers: int = 0
    store_errors: int = 0
    #: values another process read while this one waited for them (the shared single flight)
    followed: int = 0


class FactsCache:
    def __init__(
        self,
        store: Store,
        *,
        namespace: str = "default",
        stale_grace_s: float = 0.25,
        keep_s: float = 7 * 24 * 3600,
        clock: Callable[[], float] = time.time,
        on_hit: Callable[[str, str], None] | None = None,
        lock_s: float = 6.0,
    ) -> None:
        self.store = store
        self.prefix = f"{KEY_PREFIX}{namespace}:"
        self.lock_prefix = f"{LOCK_PREFIX}{namespace}:"
        #: how long a process may hold a key's read lock (longer than a Proxmox call may take)
        self.lock_s = lock_s
        self.stale_grace_s = stale_grace_s
        self.keep_s = keep_s
        self.clock = clock
        self.stats = CacheStats()
        self._l1: dict[str, tuple[Any, float]] = {}
        self._inflight: dict[str, asyncio.Future] = {}
        self._on_hit = on_hit or (lambda kind, level: None)
        #: while Proxmox is known to be slow or down, an old value is answered at once
        self._unhealthy_until = 0.0

    def peek(self, key: str) -> tuple[Any, float] | None:
        """The last known value and its fetch time, however old (L1 only)."""
        return self._l1.get(key)

    def forget(self, key: str | None = None) -> None:
        if key is None:
            self._l1.clear()
        else:
            self._l1.pop(key, None)

    async def get(
        self,
        key: str,
        ttl: float,
        load: Callable[[], Awaitable[T]],
        codec: Codec[T],
    ) -> tuple[T, float]:
        now = self.clock()
        kind = key.split(":", 1)[0]
        hit = self._l1.get(key)
        if hit is not None and now - hit[1] < ttl:
            self.stats.l1_hits += 1
            self._on_hit(kind, "l1")
            return hit[0], now - hit[1]
        future = self._load_once(key, ttl, load, codec)
        stale = hit
        if stale is None:
            try:
                return await asyncio.shield(future)
            except ProxmoxError as exc:
                if not _stale_may_answer(exc):
                    raise
                stale = self._l1.get(key)  # the store may have given an old value meanwhile
                if stale is None:
                    raise
                self.stats.stale_answers += 1
                return stale[0], self.clock() - stale[1]
        # an older value exists: wait a little for the fresh one (not at all while Proxmox is
        # known to be slow or down), else answer the old one
        grace = 0.0 if time.monotonic() < self._unhealthy_until else self.stale_grace_s
        try:
            if grace <= 0 and not future.done():
                raise TimeoutError
            return await asyncio.wait_for(asyncio.shield(future), grace)
        except (TimeoutError, ProxmoxError) as exc:
            if isinstance(exc, ProxmoxError) and not _stale_may_answer(exc):
                raise
            if not isinstance(exc, NodeUnreachable):  # one node down is not Proxmox down
                self._unhealthy_until = time.monotonic() + 5.0
            self.stats.stale_answers += 1
            self._on_hit(kind, "stale")
            return stale[0], self.clock() - stale[1]

    async def renew(
        self,
        key: str,
        ttl: float,
        load: Callable[[], Awaitable[T]],
        codec: Codec[T],
    ) -> tuple[T, float]:
        """The value when it is younger than ``ttl``, else a new one, waited for to the end (one
        load in flight is joined). Never an old value instead: a failed load raises. For the
        background refresher, and for re-reading a value just proven wrong."""
        hit = self._l1.get(key)
        if hit is not None and self.clock() - hit[1] < ttl:
            return hit[0], self.clock() - hit[1]
        return await asyncio.shield(self._load_once(key, ttl, load, codec))

    def cancel(self) -> None:
        """Stop the loads in flight (the service is closing)."""
        for future in list(self._inflight.values()):
            future.cancel()

    def _load_once(
        self, key: str, ttl: float, load: Callable[[], Awaitable[T]], codec: Codec[T]
    ) -> asyncio.Future:
        """The load of ``key`` in flight, started now if there is none (single-flight)."""
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._refresh(key, ttl, load, codec))
            self._inflight[key] = future
            future.add_done_callback(lambda _f: self._inflight.pop(key, None))
            future.add_done_callback(_swallow)
        return future

    async def _refresh(
        self, key: str, ttl: float, load: Callable[[], Awaitable[T]], codec: Codec[T]
    ) -> tuple[T, float]:
        # the shared store first: another instance (or this one before a restart) may have it;
        # against Redis the key's read lock is asked for in the same round trip
        stored, lock = await self._store_get(key, lock=self.store.kind == "redis")
        if stored is not None:
            fetched_at, raw = stored
            try:
                value = codec.decode(raw)
            except (TypeError, KeyError, ValueError):  # written by another version: reload
                fetched_at = -1.0
        if stored is not None and fetched_at >= 0:
            if self._l1.get(key, (None, -1.0))[1] < fetched_at:
                self._l1[key] = (value, fetched_at)
            if self.clock() - fetched_at < ttl:
                self.stats.store_hits += 1
                self._on_hit(key.split(":", 1)[0], "store")
                if isinstance(lock, str):
                    await self._unlock(key)
                return value, self.clock() - fetched_at
        if lock is False:  # another process reads it: wait for its value in the store
            followed = await self._follow(key, ttl, codec)
            if followed is not None:
                return followed
            lock = await self._lock(key)
        try:
            self.stats.loads += 1
            try:
                value = await load()
            except ProxmoxError as exc:
                if _stale_may_answer(exc) and not isinstance(exc, NodeUnreachable):
                    self._unhealthy_until = time.monotonic() + 5.0
                raise
            self._unhealthy_until = 0.0
            fetched_at = self.clock()
            self._l1[key] = (value, fetched_at)
            held, lock = lock, None
            await self._store_put(key, fetched_at, codec.encode(value), unlock=isinstance(held, str))
            return value, 0.0
        finally:
            if isinstance(lock, str):  # the load failed: give the lock back
                await self._unlock(key)

    async def _lock(self, key: str) -> str | bool | None:
        """Take ``key``'s read lock: its token when taken, False when another process holds it,
        None when the store cannot say (then this process reads, as without a lock)."""
        token = os.urandom(8).hex()
        name, ms = self.lock_prefix + key, int(self.lock_s * 1000)
        try:
            (taken,) = await self.store.batched(lambda pipe: pipe.set(name, token, nx=True, px=ms))
        except StoreUnavailable:
            self.stats.store_errors += 1
            return None
        if isinstance(taken, Exception):
            return None
        return token if taken else False

    async def _unlock(self, key: str) -> None:
        """Give the lock back. A plain DEL: the lock outlives any read (``lock_s`` is longer than
        the Proxmox timeout), so it is still this process's; were it not, another process would
        at worst make one read more."""
        name = self.lock_prefix + key
        try:
            await self.store.batched(lambda pipe: pipe.delete(name))
        except StoreUnavailable:
            self.stats.store_errors += 1  # it expires by itself

    async def _follow(self, key: str, ttl: float, codec: Codec[T]) -> tuple[T, float] | None:
        """The value another process is reading, once it is in the store; None when that process
        gave up (the lock is gone, or held longer than ``lock_s``) without a fresh value."""
        name = self.lock_prefix + key
        give_up = time.monotonic() + self.lock_s
        while time.monotonic() < give_up:
            await asyncio.sleep(FOLLOW_POLL_S)
            try:
                text, held = await self.store.run(lambda r: _get_and_exists(r, self.prefix + key, name))
            except StoreUnavailable:
                self.stats.store_errors += 1
                return None
            stored = _parse_stored(text)
            if stored is not None and self.clock() - stored[0] < ttl:
                try:
                    value = codec.decode(stored[1])
                except (TypeError, KeyError, ValueError):
                    return None
                if self._l1.get(key, (None, -1.0))[1] < stored[0]:
                    self._l1[key] = (value, stored[0])
                self.stats.followed += 1
                self._on_hit(key.split(":", 1)[0], "store")
                return value, self.clock() - stored[0]
            if not held:
                return None
        return None

    # the store's reads and writes of concurrent loads share round trips (``Store.batched``): a
    # burst of hundreds of VMs (a node evacuation, a cold matrix) makes a few, not two per VM

    async def _store_get(self, key: str, *, lock: bool = False) -> tuple[tuple[float, Any] | None, Any]:
        """(fetched_at, raw) of the stored value or None, and with ``lock`` the key's read lock
        asked for in the same round trip: its token when taken, False when another process holds
        it (None without ``lock``, or when the store cannot say)."""
        token = os.urandom(8).hex()

        def add(pipe: Any) -> None:
            pipe.get(self.prefix + key)
            if lock:
                pipe.set(self.lock_prefix + key, token, nx=True, px=int(self.lock_s * 1000))

        try:
            got = await self.store.batched(add)
        except StoreUnavailable:
            self.stats.store_errors += 1
            return None, None
        text = got[0]
        held: Any = None
        if lock and not isinstance(got[1], Exception):
            held = token if got[1] else False
        if isinstance(text, Exception):  # e.g. another type at the key: not ours, read anew
            return None, held
        return _parse_stored(text), held

    async def _store_put(self, key: str, fetched_at: float, raw: Any, *, unlock: bool = False) -> None:
        """Write the value; with ``unlock`` give the key's read lock back in the same round trip."""
        text = json.dumps({"t": fetched_at, "v": raw}, separators=(",", ":"))

        def add(pipe: Any) -> None:
            pipe.set(self.prefix + key, text, ex=int(self.keep_s))
            if unlock:
                pipe.delete(self.lock_prefix + key)

        try:
            await self.store.batched(add)
        except StoreUnavailable:
            self.stats.store_errors += 1


async def _get_and_exists(r: Any, key: str, lock: str) -> tuple[Any, bool]:
    pipe = r.pipeline(transaction=False)
    pipe.get(key)
    pipe.exists(lock)
    text, held = await pipe.execute()
    return text, bool(held)


def _parse_stored(text: Any) -> tuple[float, Any] | None:
    """(fetched_at, raw value) of a stored entry; None when absent or not ours."""
    if not text:
        return None
    try:
        obj = json.loads(text)
        return float(obj["t"]), obj["v"]
    except (ValueError, KeyError, TypeError):
        return None


def _stale_may_answer(exc: ProxmoxError) -> bool:
    """Proxmox down, slow, failing (5xx) or refusing the token: the last known facts answer,
    labelled with their age. A thing that does not exist, or may not be read, is not hidden."""
    return not isinstance(exc, ProxmoxNotFound | ProxmoxPermissionError | ProxmoxNotImplemented)


def _swallow(future: asyncio.Future) -> None:
    """Read a background refresh's error so asyncio does not log 'never retrieved'."""
    if not future.cancelled():
        future.exception()
