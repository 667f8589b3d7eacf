"""What several service processes need of the store: the writes of concurrent callers share one
round trip (``Store.batched``), and each worker's spool is its own file, taking over the files of
processes no longer running."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import fakeredis

from migration_guard.errors import StoreUnavailable
from migration_guard.store.events import Spool
from migration_guard.store.redis_store import Store
from tests.fakes.redis import FlakyRedis


def test_concurrent_callers_share_round_trips_and_get_their_own_results():
    async def go():
        store = Store(fakeredis.FakeAsyncRedis(decode_responses=True), "embedded")

        async def one(i: int) -> list:
            def add(pipe):
                pipe.set(f"k{i}", str(i))
                pipe.incrby("total", i)
                pipe.get(f"k{i}")

            return await store.batched(add)

        got = await asyncio.gather(*(one(i) for i in range(50)))
        assert [g[0] for g in got] == [True] * 50
        assert [g[2] for g in got] == [str(i) for i in range(50)]  # each caller its own results
        assert sorted(g[1] for g in got)[-1] == sum(range(50))
        assert store.batched_calls == 50 and store.batches < 10  # grouped, not 50 round trips

    asyncio.run(go())


def test_a_down_store_fails_every_caller_of_the_batch_and_recovers():
    async def go():
        flaky = FlakyRedis()
        store = Store(flaky, "redis", retry_s=0.0)
        flaky.down = True
        got = await asyncio.gather(
            *(store.batched(lambda pipe: pipe.get("x")) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(g, StoreUnavailable) for g in got), got
        flaky.down = False
        assert await store.batched(lambda pipe: pipe.set("x", "1")) == [True]

    asyncio.run(go())


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_worker_takes_over_the_spools_of_processes_no_longer_running(tmp_path):
    dead = Spool(tmp_path, f"pending-events-{_dead_pid()}.jsonl")
    dead.append("migration-guard:events", "01DEAD", '{"id": "01DEAD"}')
    single = Spool(tmp_path)  # a single-process run's file
    single.append("migration-guard:decisions", "01SINGLE", '{"id": "01SINGLE"}')
    alive = Spool(tmp_path, f"pending-events-{os.getppid()}.jsonl")  # a running process's own
    alive.append("migration-guard:events", "01ALIVE", '{"id": "01ALIVE"}')

    mine = Spool.taking_over(tmp_path, worker=True)
    assert mine.path.name == f"pending-events-{os.getpid()}.jsonl"
    assert sorted(ident for _, ident, _ in mine.load()) == ["01DEAD", "01SINGLE"]
    assert not dead.path.exists() and not single.path.exists()
    assert [ident for _, ident, _ in alive.load()] == ["01ALIVE"]  # left to its owner
    assert not list(tmp_path.glob(".claim-*"))


def test_a_single_process_keeps_its_file_and_takes_over_dead_workers(tmp_path):
    dead = Spool(tmp_path, f"pending-events-{_dead_pid()}.jsonl")
    dead.append("migration-guard:events", "01DEAD", '{"id": "01DEAD"}')
    mine = Spool.taking_over(tmp_path, worker=False)
    assert mine.path.name == "pending-events.jsonl"
    assert [ident for _, ident, _ in mine.load()] == ["01DEAD"]
