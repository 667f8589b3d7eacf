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
import statistics
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


def big_service(vms: int, nodes: int, **settings_extra):
    """A GuardService over the in-memory reader (indexed: a VM is a lookup, not a scan of the
    scenario) and the store ``serve`` uses without Redis (``connect("memory://")``: the embedded
    store with its blocking connection pool), long cache lifetimes."""
    from migration_guard.demo.memory_reader import MemoryReader
    from migration_guard.service.guard import GuardService
    from migration_guard.service.settings import load_settings
    from migration_guard.store.redis_store import MEMORY_URL, Store, connect

    settings = load_settings(
        None,
        api_tokens="bench-matrix-token",
        pve_timeout=30,
        cache_vm_ttl=3600,
        cache_list_ttl=3600,
        cache_node_ttl=3600,
        **settings_extra,
    )
    client, kind = connect(MEMORY_URL)
    return GuardService(settings, MemoryReader(big_scenario(vms, nodes), name="big"), Store(client, kind))


def verdict(took: float, goal: float) -> str:
    return "met" if took <= goal else f"NOT met by {took - goal:.2f} s ({took / goal:.1f}x the goal)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="alternating warm rounds")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per Proxmox call when cold")
    parser.add_argument(
        "--proxmox-workers",
        type=int,
        default=48,
        help="MIGRATION_GUARD_PROXMOX_WORKERS (Proxmox calls at once)",
    )
    args = parser.parse_args()

    import httpx
    from fastapi.responses import Response

    from migration_guard.api.app import create_app

    service = big_service(args.vms, args.nodes, proxmox_workers=args.proxmox_workers)
    app = create_app(service, ("bench-matrix-token",))
    anchor: dict[str, bytes] = {}

    @app.get("/bench/same-size")
    async def same_size() -> Response:  # the anchor: a body of the full matrix's size, prebuilt
        return Response(anchor["body"], media_type="application/json")

    auth = {"Authorization": "Bearer bench-matrix-token"}

    async def get(c, path: str) -> tuple[float, bytes]:
        started = time.perf_counter()
        answer = await c.get(path, headers=auth)
        took = time.perf_counter() - started
        if answer.status_code != 200:
            raise SystemExit(f"{path}: HTTP {answer.status_code} {answer.text[:300]}")
        return took, answer.content

    async def run() -> dict:
        out: dict = {}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as c:
            service.reader.delay = args.latency  # every Proxmox call takes this long (a thread each)
            out["cold"], full = await get(c, "/v1/matrix")
            service.reader.delay = 0.0
            out["calls"] = dict(service.reader.calls)
            anchor["body"] = full
            out["full_size"] = len(full)
            out["body"] = json.loads(full)
            times: dict[str, list[float]] = {"full": [], "compact": [], "anchor": []}
            for _ in range(args.rounds):
                for kind, path in (
                    ("full", "/v1/matrix"),
                    ("compact", "/v1/matrix?format=compact"),
                    ("anchor", "/bench/same-size"),
                ):
                    took, body = await get(c, path)
                    times[kind].append(took)
                    if kind == "compact":
                        out["compact_size"] = len(body)
            out["times"] = times
        return out

    out = asyncio.run(run())
    body = out["body"]
    cells = sum(len(r["targets"]) for r in body["vms"])
    verdicts: dict[str, int] = {}
    for row in body["vms"]:
        for cell in row["targets"].values():
            verdicts[cell["verdict"]] = verdicts.get(cell["verdict"], 0) + 1
    med = {k: statistics.median(v) for k, v in out["times"].items()}
    calls = out["calls"]
    print(
        f"matrix: {len(body['vms']):,} VMs x {len(body['nodes'])} nodes = {cells:,} cells; "
        f"verdicts {verdicts}; "
        f"distinct cells judged {len(service.reports._matrix._cells):,}  [in-memory reader (indexed), "
        f"ASGI, embedded store as `serve` makes it]"
    )
    print(
        f"   cold ({args.latency * 1000:.0f} ms per Proxmox call, "
        f"{service.settings.proxmox_workers} reader threads): "
        f"{out['cold']:.2f} s; reader calls {sum(calls.values()):,} {calls}; goal <= 3 s: "
        f"{verdict(out['cold'], 3.0)}"
    )
    print(
        f"   warm, median of {args.rounds} alternating rounds: "
        f"full {med['full']:.3f} s ({out['full_size'] / 1e6:.1f} MB), "
        f"compact {med['compact']:.3f} s ({out['compact_size'] / 1e6:.2f} MB), "
        f"anchor (a prebuilt body of the full "
        f"size through the same app) {med['anchor']:.3f} s; goal full <= 0.3 s: "
        f"{verdict(med['full'], 0.3)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
