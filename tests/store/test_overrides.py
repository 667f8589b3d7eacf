"""The overrides' store on real Redis (the test session's): many spends at once take an approved
override exactly once; the lifetime is the clock's; every change is in the record's history."""

from __future__ import annotations

import asyncio

import pytest

from migration_guard.errors import ConflictError, StoreUnavailable
from migration_guard.store.overrides import ARMED, OverrideStore
from migration_guard.store.redis_store import Store, connect
from tests.fakes.clock import Clock
from tests.support.redis_server import clean_db, redis_url

pytestmark = pytest.mark.integration

REDIS_URL = redis_url(14)


@pytest.fixture
def db():
    with clean_db(REDIS_URL) as client:
        yield client


def run(coro):
    return asyncio.run(coro)


async def _fresh(clock: Clock) -> OverrideStore:
    client, kind = connect(REDIS_URL)
    return OverrideStore(Store(client, kind), clock)


def test_fifty_concurrent_spends_take_it_once(db):
    clock = Clock()

    async def scenario() -> list:
        store = await _fresh(clock)
        asked = await store.create(104, "pve-xeon-bdw", "known guest", 900, "alice")
        await store.approve(asked["id"], "bob")
        # fifty decisions at once, each on its own connection of the pool
        return await asyncio.gather(*(store.spend(104, "pve-xeon-bdw", f"d{i}") for i in range(50)))

    spent = run(scenario())
    winners = [s for s in spent if s is not None]
    assert len(winners) == 1 and winners[0]["status"] == "spent"
    assert db.get(ARMED.format(vmid=104, target="pve-xeon-bdw")) is None


def test_two_concurrent_approvals_of_two_overrides_for_one_vm_and_target_arm_one(db):
    clock = Clock()

    async def scenario() -> list:
        store = await _fresh(clock)
        a = await store.create(104, "pve-xeon-bdw", "one", 900, "alice")
        b = await store.create(104, "pve-xeon-bdw", "two", 900, "alice")
        return await asyncio.gather(
            store.approve(a["id"], "bob"), store.approve(b["id"], "carol"), return_exceptions=True
        )

    results = run(scenario())
    assert sum(isinstance(r, dict) for r in results) == 1
    [refused] = [r for r in results if isinstance(r, ConflictError)]
    assert refused.code == "override-already-approved" and "is already approved and not spent" in str(refused)


def test_the_lifetime_is_the_clocks_and_the_expiry_is_written_down(db):
    clock = Clock(1_800_000_000.0)

    async def scenario() -> tuple:
        store = await _fresh(clock)
        asked = await store.create(104, "pve-xeon-bdw", "known guest", 60, "alice")
        await store.approve(asked["id"], "bob")
        clock.now += 59
        early = await store.get(asked["id"])
        clock.now += 2
        late = await store.spend(104, "pve-xeon-bdw", "d1")
        return early, late, await store.get(asked["id"])

    early, late, after = run(scenario())
    assert early["status"] == "approved" and late is None
    assert after["status"] == "expired"
    assert [h["status"] for h in after["history"]] == ["pending", "approved", "expired"]
    assert after["history"][-1]["at"] == after["expires_at"] == "2027-01-15T08:01:00.000Z"


def test_redis_down_is_store_unavailable_never_a_spend():
    async def scenario() -> None:
        client, kind = connect("redis://127.0.0.1:1/0")
        store = OverrideStore(Store(client, kind), Clock())
        with pytest.raises(StoreUnavailable):
            await store.spend(104, "pve-xeon-bdw", "d1")
        with pytest.raises(StoreUnavailable):
            await store.create(104, "pve-xeon-bdw", "x", 900, "alice")

    run(scenario())
