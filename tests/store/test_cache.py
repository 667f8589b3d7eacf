"""The facts cache: L1, the shared store, single-flight, stale-while-revalidate, store outages."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest

from migration_guard.engine.facts import NodeFacts, VmFacts
from migration_guard.engine.hosts import HostCpu
from migration_guard.errors import NodeUnreachable, ProxmoxUnreachable, StoreUnavailable
from migration_guard.store.cache import NODE, VM, Codec, FactsCache, facts_hash, node_from, node_to
from migration_guard.store.redis_store import Store
from tests.fakes.clock import Clock
from tests.fakes.redis import FlakyRedis

PLAIN = Codec(lambda v: v, lambda v: v)


def make(clock=None, client=None, grace=0.2):
    store = Store(client or fakeredis.FakeAsyncRedis(decode_responses=True), retry_s=0.0)
    return FactsCache(store, namespace="t", stale_grace_s=grace, clock=clock or Clock(1_000_000.0)), store


class Loader:
    def __init__(self, value="v", delay=0.0, error=None) -> None:
        self.value, self.delay, self.error, self.calls = value, delay, error, 0

    async def __call__(self):
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.value


def run(coro):
    return asyncio.run(coro)


def test_l1_fresh_answers_without_loading():
    async def go():
        cache, _ = make()
        load = Loader("a")
        assert await cache.get("vm:1", 5, load, PLAIN) == ("a", 0.0)
        value, age = await cache.get("vm:1", 5, load, PLAIN)
        assert (value, age, load.calls) == ("a", 0.0, 1)
        assert cache.stats.l1_hits == 1

    run(go())


def test_ttl_expiry_reloads():
    async def go():
        clock = Clock(1_000_000.0)
        cache, _ = make(clock)
        load = Loader("a")
        await cache.get("k", 5, load, PLAIN)
        clock.now += 6
        load.value = "b"
        assert (await cache.get("k", 5, load, PLAIN))[0] == "b"
        assert load.calls == 2

    run(go())


def test_single_flight_burst_makes_one_call():
    async def go():
        cache, _ = make()
        load = Loader("facts", delay=0.05)
        got = await asyncio.gather(*(cache.get("node:pve1", 60, load, PLAIN) for _ in range(500)))
        assert load.calls == 1
        assert {g[0] for g in got} == {"facts"}

    run(go())


def test_single_flight_shares_the_error_when_nothing_is_known():
    async def go():
        cache, _ = make()
        load = Loader(error=ProxmoxUnreachable("cannot reach Proxmox at pve1:8006: refused"), delay=0.02)
        results = await asyncio.gather(
            *(cache.get("k", 5, load, PLAIN) for _ in range(20)), return_exceptions=True
        )
        assert load.calls == 1
        assert all(isinstance(r, ProxmoxUnreachable) for r in results)

    run(go())


def test_stale_answer_with_age_when_proxmox_is_down():
    async def go():
        clock = Clock(1_000_000.0)
        cache, _ = make(clock)
        await cache.get("k", 5, Loader("old"), PLAIN)
        clock.now += 42
        value, age = await cache.get("k", 5, Loader(error=ProxmoxUnreachable("down")), PLAIN)
        assert (value, age) == ("old", 42.0)
        assert cache.stats.stale_answers == 1

    run(go())


def test_stale_answer_when_proxmox_is_slow_then_fresh_value_lands():
    async def go():
        clock = Clock(1_000_000.0)
        cache, _ = make(clock, grace=0.05)
        await cache.get("k", 5, Loader("old"), PLAIN)
        clock.now += 10
        slow = Loader("new", delay=0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        value, age = await cache.get("k", 5, slow, PLAIN)
        assert (value, age) == ("old", 10.0)
        assert loop.time() - started < 0.25
        await asyncio.sleep(0.4)  # the refresh goes on in the background
        assert (await cache.get("k", 5, slow, PLAIN))[0] == "new"
        assert slow.calls == 1

    run(go())


def test_one_node_down_does_not_make_the_cache_answer_old_facts_elsewhere():
    """A 595 for one node (NodeUnreachable) says nothing about Proxmox: other refreshes still
    wait their grace for the fresh value. Proxmox itself down (ProxmoxUnreachable) does."""

    async def go(error):
        clock = Clock(1_000_000.0)
        cache, _ = make(clock, grace=0.5)
        await cache.get("vm:1", 5, Loader("old"), PLAIN)
        with pytest.raises(ProxmoxUnreachable):
            await cache.get("node:pve5", 300, Loader(error=error), PLAIN)
        clock.now += 10
        return await cache.get("vm:1", 5, Loader("new", delay=0.05), PLAIN)

    assert run(go(NodeUnreachable("no route to host (node pve5 is offline)")))[0] == "new"
    assert run(go(ProxmoxUnreachable("cannot reach Proxmox at pve1:8006: refused")))[0] == "old"


def test_renew_waits_for_the_new_value_and_raises_instead_of_answering_old():
    async def go():
        clock = Clock(1_000_000.0)
        cache, _ = make(clock, grace=0.01)
        await cache.get("vms", 10, Loader("old"), PLAIN)
        clock.now += 6
        assert await cache.renew("vms", 10, Loader("unused"), PLAIN) == ("old", 6.0)  # young enough
        assert await cache.renew("vms", 5, Loader("new", delay=0.05), PLAIN) == ("new", 0.0)
        clock.now += 6
        with pytest.raises(ProxmoxUnreachable):
            await cache.renew("vms", 5, Loader(error=ProxmoxUnreachable("down")), PLAIN)
        slow = Loader("joined", delay=0.05)
        got = await asyncio.gather(cache.get("vms", 1, slow, PLAIN), cache.renew("vms", 1, slow, PLAIN))
        assert slow.calls == 1 and got[1] == ("joined", 0.0)  # one load in flight, joined

    run(go())


def test_cancel_stops_loads_in_flight():
    async def go():
        cache, _ = make()
        slow = Loader("late", delay=5)
        task = asyncio.ensure_future(cache.renew("k", 5, slow, PLAIN))
        for _ in range(500):  # until the load is in flight (a loaded machine may take a while)
            if slow.calls:
                break
            await asyncio.sleep(0.01)
        assert slow.calls == 1
        cache.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cache.peek("k") is None

    run(go())


def test_store_shares_facts_between_instances_and_serves_stale_after_restart():
    async def go():
        redis = fakeredis.FakeAsyncRedis(decode_responses=True)
        clock = Clock(1_000_000.0)
        first, _ = make(clock, redis)
        await first.get("k", 5, Loader("shared"), PLAIN)
        second, _ = make(clock, redis)
        load = Loader("other")
        assert (await second.get("k", 5, load, PLAIN))[0] == "shared"
        assert load.calls == 0
        clock.now += 100  # old now, and Proxmox is down: the store's old value is answered
        third, _ = make(clock, redis)
        value, age = await third.get("k", 5, Loader(error=ProxmoxUnreachable("down")), PLAIN)
        assert (value, age) == ("shared", 100.0)

    run(go())


def test_redis_down_loads_straight_from_proxmox_and_recovers():
    async def go():
        flaky = FlakyRedis()
        cache, store = make(client=flaky)
        flaky.down = True
        load = Loader("direct")
        assert (await cache.get("k", 5, load, PLAIN))[0] == "direct"
        assert store.degraded
        flaky.down = False
        cache.forget()
        assert (await cache.get("k", 5, load, PLAIN))[0] == "direct"
        assert not store.degraded
        assert load.calls == 2

    run(go())


def test_store_fails_fast_while_down():
    async def go():
        flaky = FlakyRedis()
        store = Store(flaky, retry_s=60)
        flaky.down = True
        with pytest.raises(StoreUnavailable):
            await store.run(lambda r: r.get("x"))
        flaky.down = False
        with pytest.raises(StoreUnavailable):  # still in back-off: not even asked
            await store.run(lambda r: r.get("x"))
        assert await store.ping() is True
        assert store.up

    run(go())


def test_node_and_vm_codecs_round_trip():
    cpu = HostCpu(
        name="pve1",
        vendor="intel",
        model="Xeon",
        flags=frozenset({"avx2", "sse4_2"}),
        bugs=frozenset({"spectre_v1"}),
        family=6,
        model_number=85,
    )
    node = NodeFacts(
        cluster="lab",
        name="pve1",
        online=True,
        cpu_model="Xeon",
        cpu=cpu,
        flag_source="cpuinfo",
        pve_version="9.2.1",
        qemu_version="9.2",
        machines=("pc-q35-9.2",),
        fetched_at=5.0,
    )
    assert NODE.decode(NODE.encode(node)) == node
    assert node_from(node_to(node)).cpu == cpu
    vm = VmFacts(
        cluster="lab",
        vmid=101,
        node="pve1",
        status="running",
        name="web01",
        tags=("a", "b"),
        cpu="x86-64-v3",
        running_machine="pc-q35-9.2+pve0",
    )
    assert VM.decode(VM.encode(vm)) == vm


def test_facts_hash_changes_with_flags_and_versions_only():
    cpu = HostCpu(name="pve1", vendor="intel", model="Xeon", flags=frozenset({"avx2"}))
    node = NodeFacts(
        cluster="lab", name="pve1", online=True, cpu_model="Xeon", cpu=cpu, qemu_version="9.2", fetched_at=1.0
    )
    same_later = NodeFacts(
        cluster="lab",
        name="pve1",
        online=True,
        cpu_model="Xeon",
        cpu=cpu,
        qemu_version="9.2",
        fetched_at=99.0,
    )
    assert facts_hash(node) == facts_hash(same_later)
    newer_qemu = NodeFacts(
        cluster="lab", name="pve1", online=True, cpu_model="Xeon", cpu=cpu, qemu_version="10.0"
    )
    assert facts_hash(node) != facts_hash(newer_qemu)
    fewer_flags = NodeFacts(
        cluster="lab",
        name="pve1",
        online=True,
        cpu_model="Xeon",
        cpu=HostCpu(name="pve1", vendor="intel", model="Xeon", flags=frozenset()),
        qemu_version="9.2",
    )
    assert facts_hash(node) != facts_hash(fewer_flags)
