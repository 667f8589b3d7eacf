"""Memory of the service with 10,000 VMs and 64 nodes cached (printed numbers).

Builds the service over the in-memory reader of benchmarks/matrix.py (64 nodes with the real CPU
fixtures, 10,000 VMs), then fills its caches the way a busy day does: every node's facts, every
VM's facts (the matrix reads them all), a warm check of every VM against one target, and one full
matrix. Prints the process's resident memory (VmRSS) at each step and the growth over the empty
service. The store is the embedded one (in-process, so its cached facts count in the RSS: the
worst case). With ``--redis-url redis://127.0.0.1:6379/5`` the store is real Redis and the script
also prints the bytes Redis holds for the service's keys (``MEMORY USAGE`` summed; that DB is
flushed first and after).

Run: .venv/bin/python benchmarks/memory.py [--vms 10000] [--nodes 64] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--skip-matrix", action="store_true", help="leave out the full matrix step")
    args = parser.parse_args()

    from matrix import big_scenario

    import migration_guard.api.app  # noqa: F401 - the imports count in the baseline, not in the growth
    import migration_guard.service.guard  # noqa: F401

    gc.collect()
    baseline = rss_mb()
    print(f"memory: python + service modules imported: {baseline:.0f} MB RSS")

    from migration_guard.demo.memory_reader import MemoryReader
    from migration_guard.service.guard import GuardService
    from migration_guard.service.settings import load_settings
    from migration_guard.store.redis_store import MEMORY_URL, Store, connect

    settings = load_settings(
        None,
        api_tokens="bench",
        pve_timeout=30,
        cache_vm_ttl=3600,
        cache_list_ttl=3600,
        cache_node_ttl=3600,
        redis_url=args.redis_url,
    )
    reader = MemoryReader(big_scenario(args.vms, args.nodes), name="big")
    # the store exactly as `serve` makes it: Redis at --redis-url, else the embedded one
    client, kind = connect(args.redis_url or MEMORY_URL)
    store = Store(client, kind)
    service = GuardService(settings, reader, store)
    gc.collect()
    empty = rss_mb()
    print(f"   empty service + the scenario held by the in-memory reader: {empty:.0f} MB")

    async def fill() -> None:
        if args.redis_url:
            await store.client.flushdb()
        started = time.perf_counter()
        nodes, _ = await service.node_list()
        await asyncio.gather(*(service.node(n.name) for n in nodes))
        vms = await service.reports.all_vm_facts()
        gc.collect()
        step1 = rss_mb()
        print(
            f"   facts of {len(nodes)} nodes and {len(vms):,} VMs cached: {step1:.0f} MB "
            f"(+{step1 - empty:.0f} MB, {(step1 - empty) * 1024 * 1024 / max(1, len(vms)):,.0f} bytes/VM) "
            f"[{time.perf_counter() - started:.1f} s]"
        )
        started = time.perf_counter()
        target = nodes[0].name
        for vm in vms:
            if vm.node != target:
                await service.check(vm.vmid, target)
        gc.collect()
        step2 = rss_mb()
        print(
            f"   + a warm verdict of every VM against {target} memoised: {step2:.0f} MB "
            f"(+{step2 - empty:.0f} MB over the empty service) [{time.perf_counter() - started:.1f} s]"
        )
        if not args.skip_matrix:
            started = time.perf_counter()
            body = await service.matrix()
            del body
            gc.collect()
            step3 = rss_mb()
            print(
                f"   + one full matrix computed (and dropped): {step3:.0f} MB "
                f"(+{step3 - empty:.0f} MB over the empty service) [{time.perf_counter() - started:.1f} s]"
            )
        if args.redis_url:
            total = 0
            count = 0
            async for key in store.client.scan_iter(count=1000):
                total += await store.client.memory_usage(key) or 0
                count += 1
            print(f"   Redis holds {count:,} keys of the service, {total / 1e6:.1f} MB (MEMORY USAGE summed)")
            await store.client.flushdb()
        await service.close()

    asyncio.run(fill())
    return 0


if __name__ == "__main__":
    sys.exit(main())
