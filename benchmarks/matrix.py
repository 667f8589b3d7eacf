"""The matrix endpoint (``GET /v1/matrix``: every VM against every node) for a big cluster.

Default size: 10,000 VMs x 64 nodes (630,000 cells: a VM is not checked against its own node).
The nodes carry the 24 real CPUs of shared/migration_guard/data/cpus/ (cycled), the VMs a mix of CPU types.
The
cluster is served by an in-memory reader with the ClusterReader's interface (tests/api/test_api.py's
MemoryReader): reading 10,000 VM configs from a real Proxmox takes 10,000 API calls whatever the
service does, so this measures what the service adds — the verdicts and the JSON — through the
real FastAPI app (httpx's ASGI transport, no socket). Two requests: cold (facts loaded from the
reader, every cell computed) and warm (facts cached).

Run: .venv/bin/python benchmarks/matrix.py [--vms 10000] [--nodes 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CPU_MIX = [
    "x86-64-v2-AES",
    "x86-64-v3",
    "x86-64-v4",
    "host",
    "kvm64",
    "",
    "Skylake-Server-v4",
    "Cascadelake-Server",
    "EPYC-Milan",
    "EPYC-Rome",
    "Broadwell-noTSX",
    "Haswell-noTSX,flags=+aes",
]


def big_scenario(vms: int, nodes: int) -> dict:
    """``nodes`` nodes with the real CPU fixtures (cycled) and ``vms`` running VMs spread over them."""
    fixtures = sorted((ROOT / "shared" / "migration_guard" / "data" / "cpus").glob("*.json"))
    if not fixtures:
        raise SystemExit("shared/migration_guard/data/cpus/*.json is missing: the CPU fixtures are needed")
    node_list = []
    for i in range(nodes):
        cpu = json.loads(fixtures[i % len(fixtures)].read_text())
        node_list.append(
            {
                "name": f"node{i + 1:02d}",
                "cpu": {"model": cpu["model_name"], "flags": cpu["flags"]},
                "qemu_version": "9.2.0",
            }
        )
    vm_list = [
        {
            "vmid": 100 + i,
            "node": node_list[i % nodes]["name"],
            "name": f"vm{i:05d}",
            "status": "running",
            "config": {"cpu": CPU_MIX[i % len(CPU_MIX)]},
            "running_machine": "pc-q35-8.1+pve0",
        }
        for i in range(vms)
    ]
    return {"cluster": "big", "pve_version": "9.2.1", "nodes": node_list, "vms": vm_list}


def big_service(vms: int, nodes: int):
    """A GuardService over the in-memory reader and the embedded store, long cache lifetimes."""
    import fakeredis

    from migration_guard.demo.memory_reader import MemoryReader
    from migration_guard.service.guard import GuardService
    from migration_guard.service.settings import load_settings
    from migration_guard.store.redis_store import Store

    settings = load_settings(
        None,
        api_tokens="bench-matrix-token",
        pve_timeout=30,
        cache_vm_ttl=3600,
        cache_list_ttl=3600,
        cache_node_ttl=3600,
    )
    store = Store(fakeredis.FakeAsyncRedis(decode_responses=True), "embedded", retry_s=0.0)
    return GuardService(settings, MemoryReader(big_scenario(vms, nodes), name="big"), store)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=64)
    args = parser.parse_args()

    import httpx

    from migration_guard.api.app import create_app

    service = big_service(args.vms, args.nodes)
    app = create_app(service, ("bench-matrix-token",))

    async def run() -> list[tuple[float, int, dict]]:
        out = []
        transport = httpx.ASGITransport(app=app)
        auth = {"Authorization": "Bearer bench-matrix-token"}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as c:
            for _ in range(2):
                started = time.perf_counter()
                answer = await c.get("/v1/matrix", headers=auth)
                took = time.perf_counter() - started
                if answer.status_code != 200:
                    raise SystemExit(f"matrix: HTTP {answer.status_code} {answer.text[:300]}")
                out.append((took, len(answer.content), answer.json()))
        return out

    (cold, size, body), (warm, _, _) = asyncio.run(run())
    cells = sum(len(r["targets"]) for r in body["vms"])
    verdicts: dict[str, int] = {}
    for row in body["vms"]:
        for cell in row["targets"].values():
            verdicts[cell["verdict"]] = verdicts.get(cell["verdict"], 0) + 1
    print(
        f"matrix: {len(body['vms']):,} VMs x {len(body['nodes'])} nodes = {cells:,} cells; "
        f"cold {cold:.2f} s ({cells / cold:,.0f} cells/s), warm {warm:.2f} s ({cells / warm:,.0f} cells/s); "
        f"body {size / 1e6:.1f} MB; verdicts {verdicts}  [in-memory reader, ASGI, embedded store]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
