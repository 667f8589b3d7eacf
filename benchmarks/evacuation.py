"""A node evacuation: 1,000 concurrent hook decisions for the VMs of one node (printed numbers).

The real service runs as its production entry (``migration-guard serve``, uvicorn, its own process)
against the Proxmox-shaped HTTPS test server (50 ms latency per Proxmox call, like a busy cluster).
Node ``pve1`` holds N VMs (default 1,000) with a mix of CPU types; all N hook requests are sent at
once, each exactly as the hookscript sends it (``POST /v1/decisions`` with
``Accept: text/plain``), over N concurrent connections from this process. No VM's facts are
cached. By default the service has been running a moment (its background refresher has read the
nodes and the VM list, as in production); ``--cold``: the evacuation is the first thing a service
with the refresher turned off sees.

Prints: wall time, p50/p99 latency per decision, verdict counts, and the Proxmox HTTP request count
(goal: <= distinct VMs + nodes; each VM costs its config, the statuses come in one node-wide call).

Run: .venv/bin/python benchmarks/evacuation.py [--vms 1000] [--latency-ms 50] [--redis-url URL] [--cold]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASE = ROOT / "tests" / "fixtures" / "service" / "scenario.json"
TOKEN = "bench-evacuation-token"
CPU_MIX = ["x86-64-v2-AES", "x86-64-v3", "x86-64-v4", "host", "Skylake-Server-v4", "EPYC-Milan"]


def scenario(vms: int) -> dict:
    """The service-test cluster (5 nodes: 3 Intel generations, AMD, one offline) with ``vms`` VMs
    on pve1."""
    sc = json.loads(BASE.read_text())
    template = copy.deepcopy(sc["vms"][0])
    sc["vms"] = []
    for i in range(vms):
        vm = copy.deepcopy(template)
        vm.update(vmid=1000 + i, node="pve1", name=f"evac{i:04d}", config={"cpu": CPU_MIX[i % len(CPU_MIX)]})
        sc["vms"].append(vm)
    return sc


async def decide(port: int, vmid: int, target: str) -> tuple[float, dict]:
    body = json.dumps({"vmid": vmid, "target": target, "source": "pve1", "mode": "enforce"}).encode()
    request = (
        f"POST /v1/decisions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Accept: text/plain\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        raw = await reader.read()
    finally:
        writer.close()
    took = time.perf_counter() - started
    head, _, text = raw.partition(b"\r\n\r\n")
    fields = dict(line.split("=", 1) for line in text.decode().splitlines() if "=" in line)
    fields["status"] = head[9:12].decode()
    return took, fields


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its waited-for children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--redis-url", default="memory://", help="default: the embedded store (memory://)")
    parser.add_argument(
        "--cold", action="store_true", help="refresher off: the evacuation is the service's first request"
    )
    args = parser.parse_args()

    from bench_support import cli_argv, free_port, serve_env

    from migration_guard.demo.pve_server import start_server

    server = start_server(scenario(args.vms))
    port = free_port()
    refresh = "false" if args.cold else "true"
    env = serve_env(
        server, port, TOKEN, args.redis_url, "bench-evac-", PVE_TIMEOUT="10", INVENTORY_REFRESH=refresh
    )
    proc = subprocess.Popen(
        cli_argv("serve", "--log-level", "warning"), env=env, cwd=ROOT, stderr=subprocess.DEVNULL
    )
    try:
        import httpx

        for _ in range(300):
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        # serve answers only once it has read the inventory (unless --cold turned that off)
        server.reset_counts()
        server.set_faults(latency_s=args.latency_ms / 1000)
        targets = ["pve2", "pve3", "pve4"]

        cpu_before = _cpu_seconds(proc.pid)

        async def evacuate():
            started = time.perf_counter()
            got = await asyncio.gather(
                *(decide(port, 1000 + i, targets[i % len(targets)]) for i in range(args.vms))
            )
            return got, time.perf_counter() - started

        results, wall = asyncio.run(evacuate())
        service_cpu = _cpu_seconds(proc.pid) - cpu_before
        times = sorted(r[0] for r in results)
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        verdicts: dict[str, int] = {}
        for _, f in results:
            key = f"{f.get('verdict', '?')}/{f.get('code', '')}" if f["status"] != "200" else f["verdict"]
            verdicts[key] = verdicts.get(key, 0) + 1
        requests = server.requests()
        total = sum(requests.values())
        nodes = 1 + len(targets)
        resources = args.vms + nodes
        print(
            f"evacuation: {args.vms} concurrent hook decisions (POST /v1/decisions, text/plain) for the "
            f"VMs of pve1 to {len(targets)} targets, "
            f"{'empty caches' if args.cold else 'running service (nodes and VM list fresh)'}, "
            f"{args.latency_ms:g} ms Proxmox latency, "
            f"store={'embedded' if args.redis_url == 'memory://' else 'redis'}"
        )
        print(
            f"   wall {wall:.2f} s; latency p50 {statistics.median(times) * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms; verdicts {verdicts}"
        )
        print(
            f"   the service process used {service_cpu:.2f} s of CPU "
            f"({service_cpu / args.vms * 1000:.1f} ms per decision); the rest of the wall time is the "
            "test server's TLS and the load generator on the same cores"
        )
        per_kind: dict[str, int] = {}
        for path, n in requests.items():
            parts = path.strip("/").split("/")
            kind = "/".join(
                p if not p.isdigit() and p not in ("pve1", "pve2", "pve3", "pve4", "pve5") else "*"
                for p in parts[:6]
            )
            per_kind[kind] = per_kind.get(kind, 0) + n
        print(
            f"   Proxmox HTTP requests: {total} (max {max(requests.values())} per path); distinct VMs + "
            f"nodes = {args.vms} + {nodes} = {resources}; goal <= VMs + nodes: "
            f"{'met' if total <= resources else 'NOT met'} "
            f"({total / resources:.2f} requests per resource)"
        )
        for kind, n in sorted(per_kind.items(), key=lambda kv: -kv[1])[:8]:
            print(f"      {n:6d}  {kind}")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        calls = {}
        for line in metrics.splitlines():
            if line.startswith("migration_guard_proxmox_calls_total{"):
                kind = line.split('kind="', 1)[1].split('"', 1)[0]
                calls[kind] = int(float(line.rsplit(" ", 1)[1]))
        if calls:
            print(
                f"   the service's own count (round trips, a pair of GETs in one): {sum(calls.values())} "
                f"{dict(sorted(calls.items()))}"
            )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
