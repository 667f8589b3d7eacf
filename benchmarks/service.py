"""Speed of the compatibility service (printed numbers, not a timed test).

1. Warm ``GET /v1/vms/{vmid}/check`` and the hook's ``POST /v1/decisions`` (an allow and a deny,
   ``Accept: text/plain``) against a bare FastAPI endpoint returning a constant JSON, all in the
   same uvicorn process, on both server stacks (httptools + uvloop, which ``serve`` uses; h11 +
   asyncio), measured side by side (alternating in every round) by an HTTP load generator in
   another process. Goals: warm check >= 0.9x, decision >= 0.6x the bare endpoint's requests/s.
2. Cold check with 50 ms Proxmox latency (proxmoxer over HTTPS to the test server): the VM's own
   facts not cached, (a) in ``serve``, which reads the cluster's nodes and VM list before it
   listens and keeps them fresh (the first check after start, and any later one), and (b) with
   that refresher off (MIGRATION_GUARD_INVENTORY_REFRESH=false), the first request of a service
   that knows nothing yet. Goal: <= 1.5 x one Proxmox round trip.
3. A burst of 500 concurrent decisions for the VMs of one node, (a) in a running service (nodes
   and VM list fresh) and (b) from empty caches. Goal: Proxmox calls <= distinct VMs + nodes.

Run: .venv/bin/python benchmarks/service.py [--seconds 3] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCENARIO = ROOT / "tests" / "fixtures" / "service" / "scenario.json"
TOKEN = "bench-token"


def _settings(server, **extra):
    from migration_guard.service.settings import load_settings

    tok = server.token
    values = dict(
        pve_host=server.host_port,
        pve_user=tok["user"],
        pve_token_name=tok["name"],
        pve_token_value=tok["value"],
        pve_verify_ssl=server.ca_path,
        api_tokens=TOKEN,
        pve_cluster_name="lab",
        redis_url="",
        pve_timeout=5,
    )
    values.update(extra)
    return load_settings(None, **values)


# --- 1. warm check vs bare endpoint ---------------------------------------------------------------


def serve(port: int, stack: str, redis_url: str = "") -> None:
    """The server side of benchmark 1 (run in a subprocess): the service's app plus a bare
    constant endpoint, under uvicorn with ``stack`` "standard" (httptools + uvloop, what `serve`
    uses since they are installed) or "plain" (h11 + asyncio)."""
    import uvicorn
    from fastapi.responses import Response

    from migration_guard.api.app import create_app
    from migration_guard.demo.pve_server import start_server
    from migration_guard.service.guard import build_service

    server = start_server(str(SCENARIO))
    settings = _settings(
        server, cache_vm_ttl=3600, cache_list_ttl=3600, cache_node_ttl=3600, redis_url=redis_url
    )
    app = create_app(build_service(settings), settings.bearer_tokens())

    constant = b'{"vmid":101,"verdict":"allow"}'

    @app.get("/bench/constant")
    async def bare() -> Response:
        return Response(constant, media_type="application/json")

    options = (
        {"http": "httptools", "loop": "uvloop"} if stack == "standard" else {"http": "h11", "loop": "asyncio"}
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, **options)


async def _load(
    url: str, headers: dict, seconds: float, concurrency: int, body: bytes | None = None, fresh: bool = False
) -> float:
    """Requests per second over ``concurrency`` keep-alive connections (``fresh``: a new
    connection per request, the hook's way); a POST when ``body`` is given. A minimal raw HTTP/1.1
    client (httpx on this side would be the bottleneck, not the server)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    method = "GET" if body is None else "POST"
    extra = {} if body is None else {"Content-Type": "application/json", "Content-Length": str(len(body))}
    if fresh:
        extra["Connection"] = "close"
    head = f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in {**headers, **extra}.items()
    )
    request = (head + "\r\n").encode() + (body or b"")
    stop = time.perf_counter() + seconds
    count = 0

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        writer.write(request)
        status_and_headers = await reader.readuntil(b"\r\n\r\n")
        status = status_and_headers[9:12]
        length = 0
        for line in status_and_headers.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        if status != b"200":
            raise SystemExit(f"{url}: HTTP {status.decode()}")
        count += 1

    async def worker() -> None:
        if fresh:
            while time.perf_counter() < stop:
                reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                try:
                    await exchange(reader, writer)
                finally:
                    writer.close()
            return
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while time.perf_counter() < stop:
                await exchange(reader, writer)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


def _wait_up(base: str) -> None:
    import httpx

    for _ in range(300):
        try:
            httpx.get(base + "/healthz", timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{base} did not start")


def bench_warm(seconds: float, concurrency: int, rounds: int) -> None:
    """Warm check and the hook's decision (allow and deny) against the bare endpoint, on both
    server stacks, every measurement alternating with the others in each round."""
    import httpx
    from bench_support import start_private_redis

    redis = start_private_redis()
    procs, bases = [], {}
    stacks = [("standard", ""), ("plain", "")]
    if redis is not None:
        stacks.append(("standard+redis", f"redis://127.0.0.1:{redis.port}/0"))
    for stack, url in stacks:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        argv = [
            sys.executable,
            __file__,
            "--serve",
            str(port),
            "--stack",
            stack.split("+")[0],
            "--redis-url",
            url,
        ]
        procs.append(subprocess.Popen(argv, cwd=ROOT))
        bases[stack] = f"http://127.0.0.1:{port}"
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        hook = {**auth, "Accept": "text/plain"}
        allow = json.dumps({"vmid": 101, "target": "pve2", "source": "pve1"}).encode()
        deny = json.dumps({"vmid": 101, "target": "pve3", "source": "pve1"}).encode()
        kinds = {
            "bare": ("/bench/constant", {}, None),
            "check": ("/v1/vms/101/check?target=pve3", auth, None),
            "decision allow": ("/v1/decisions", hook, allow),
            "decision deny": ("/v1/decisions", hook, deny),
        }
        for base in bases.values():
            _wait_up(base)
            first = httpx.get(base + kinds["check"][0], headers=auth, timeout=30).json()  # warms the caches
            assert first["verdict"] in ("allow", "deny"), first
            for path, headers, body in kinds.values():
                asyncio.run(_load(base + path, headers, 0.5, concurrency, body))
        results: dict[tuple[str, str], list[float]] = {(st, k): [] for st in bases for k in kinds}
        for _ in range(rounds):
            for stack, base in bases.items():
                for kind, (path, headers, body) in kinds.items():
                    results[(stack, kind)].append(
                        asyncio.run(_load(base + path, headers, seconds, concurrency, body))
                    )
        for stack in bases:
            b = statistics.median(results[(stack, "bare")])
            line = ", ".join(
                f"{k} {statistics.median(results[(stack, k)]):,.0f} req/s = "
                f"{statistics.median(results[(stack, k)]) / b:.2f}x"
                for k in kinds
                if k != "bare"
            )
            label = {
                "standard": "httptools + uvloop (serve), embedded store",
                "plain": "h11 + asyncio, embedded store",
                "standard+redis": "httptools + uvloop, Redis",
            }[stack]
            print(f"1. {label}: bare FastAPI constant {b:,.0f} req/s; {line}")
        for stack in ("standard", "standard+redis"):
            if stack not in bases:
                continue
            std = statistics.median(results[(stack, "bare")])
            check = statistics.median(results[(stack, "check")]) / std
            deny_r = statistics.median(results[(stack, "decision deny")]) / std
            allow_r = statistics.median(results[(stack, "decision allow")]) / std
            print(
                f"   goals ({stack}): warm check >= 0.9x: {check:.2f}x "
                f"{'met' if check >= 0.9 else 'NOT met'}; POST /v1/decisions >= 0.6x: allow {allow_r:.2f}x, "
                f"deny {deny_r:.2f}x {'met' if min(allow_r, deny_r) >= 0.6 else 'NOT met'}"
            )
        print(
            f"   [median of {rounds} alternating {seconds:g} s rounds, {concurrency} keep-alive connections]"
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        if redis is not None:
            redis.stop()


def bench_workers(seconds: float, concurrency: int, rounds: int) -> None:
    """``migration-guard serve --workers 2`` against ``--workers 1`` (both on one Redis, the
    production entry in its own process), the hook's way: a new connection per decision; rounds
    alternate between the two. Goal: 2 workers >= 1.8x the requests/s of 1."""

    from bench_support import cli_argv, free_port, serve_env, start_private_redis

    from migration_guard.demo.pve_server import start_server

    redis = start_private_redis()
    if redis is None:
        print("4. workers: skipped (no redis-server)")
        return
    pve = start_server(str(SCENARIO))
    procs, bases = [], {}
    try:
        for workers in (1, 2):
            port = free_port()
            redis_url = f"redis://127.0.0.1:{redis.port}/{workers}"
            env = serve_env(pve, port, TOKEN, redis_url, "bench-workers-", CACHE_VM_TTL="3600")
            argv = cli_argv("serve", "--workers", str(workers), "--log-level", "warning")
            procs.append(subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL))
            bases[workers] = f"http://127.0.0.1:{port}"
        hook = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/plain"}
        body = json.dumps({"vmid": 101, "target": "pve2", "source": "pve1"}).encode()
        for base in bases.values():
            _wait_up(base)
            asyncio.run(_load(base + "/v1/decisions", hook, 1.0, concurrency, body, fresh=True))
        rates: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(rounds):
            for workers, base in bases.items():
                rates[workers].append(
                    asyncio.run(_load(base + "/v1/decisions", hook, seconds, concurrency, body, fresh=True))
                )
        one, two = statistics.median(rates[1]), statistics.median(rates[2])
        print(
            f"4. serve --workers 2 vs --workers 1 (Redis), a new connection per decision: {two:,.0f} vs "
            f"{one:,.0f} req/s = {two / one:.2f}x (goal >= 1.8x: {'met' if two / one >= 1.8 else 'NOT met'}; "
            f"the machine has {os.cpu_count()} cores, shared with the load generator) "
            f"[median of {rounds} alternating {seconds:g} s rounds, {concurrency} connections at a time]"
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)
        pve.stop()
        redis.stop()


def bench_warm_asgi(n: int) -> None:
    """The same comparison without sockets or a load generator: the server's own cost per request
    (httpx's ASGI transport calls the app in this process)."""
    import httpx
    from fastapi.responses import Response

    from migration_guard.api.app import create_app
    from migration_guard.demo.pve_server import start_server
    from migration_guard.service.guard import build_service

    server = start_server(str(SCENARIO))
    settings = _settings(server, cache_vm_ttl=3600, cache_list_ttl=3600, cache_node_ttl=3600)
    app = create_app(build_service(settings), settings.bearer_tokens())
    constant = b'{"vmid":101,"verdict":"allow"}'

    @app.get("/bench/constant")
    async def bare() -> Response:
        return Response(constant, media_type="application/json")

    async def run() -> tuple[float, float]:
        transport = httpx.ASGITransport(app=app)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            first = await client.get("/v1/vms/101/check?target=pve3", headers=auth)
            assert first.json()["verdict"] in ("allow", "deny"), first.text
            results = {"bare": [], "check": []}
            for _ in range(3):
                for name, url, headers in (
                    ("bare", "/bench/constant", {}),
                    ("check", "/v1/vms/101/check?target=pve3", auth),
                ):
                    started = time.perf_counter()
                    for _ in range(n):
                        await client.get(url, headers=headers)
                    results[name].append(n / (time.perf_counter() - started))
            return statistics.median(results["bare"]), statistics.median(results["check"])

    try:
        b, w = asyncio.run(run())
        print(
            f"1b. in-process (ASGI, no sockets): warm check {w:,.0f} req/s, bare {b:,.0f} req/s, "
            f"ratio {w / b:.0%}"
        )
    finally:
        server.stop()


# --- 2. cold check with 50 ms Proxmox latency ------------------------------------------------------


def bench_cold(repeats: int) -> None:
    from migration_guard.cluster.reader import ClusterReader
    from migration_guard.demo.pve_server import start_server
    from migration_guard.service.guard import build_service
    from migration_guard.service.refresher import InventoryRefresher

    server = start_server(str(SCENARIO))
    settings = _settings(server)
    try:
        server.set_faults(latency_s=0.05)
        reader = ClusterReader(
            "lab",
            settings.pve_host,
            settings.pve_user,
            settings.pve_token_name,
            settings.pve_token_value.get_secret_value(),
            verify_ssl=settings.verify_ssl,
        )
        rtts = []
        for _ in range(repeats):
            started = time.perf_counter()
            reader.nodes()
            rtts.append(time.perf_counter() - started)
        rtt = statistics.median(rtts)

        async def once(kind: str, inventory: bool) -> tuple[float, int]:
            service = build_service(settings)
            # connections set up (TLS done), like a service that has been running: a pool of them
            with concurrent.futures.ThreadPoolExecutor(8) as warm:
                list(warm.map(lambda _: service.reader.nodes(), range(8)))
            if inventory:  # what `serve` reads before it listens
                await InventoryRefresher(service).first_round()
            server.reset_counts()
            try:
                started = time.perf_counter()
                if kind == "decision":
                    outcome = await service.decide({"vmid": 101, "target": "pve3", "source": "pve1"})
                else:
                    outcome = await service.check(101, "pve3")
                took = time.perf_counter() - started
                assert outcome.body["verdict"] in ("allow", "deny"), outcome.body
            finally:
                await service.close()
            return took, server.request_count()

        for inventory, state in (
            (True, "first check after start (serve reads the inventory before it listens)"),
            (False, "refresher off, first request"),
        ):
            for kind, label in (
                ("decision", "POST /v1/decisions (source given, the hook)"),
                ("check", "GET check (no source: the VM's node looked up)"),
            ):
                runs = [asyncio.run(once(kind, inventory)) for _ in range(repeats)]
                took = statistics.median(r[0] for r in runs)
                print(
                    f"2{'a' if inventory else 'b'}. cold {label}, {state}: {took * 1000:.0f} ms = "
                    f"{took / rtt:.2f} x one Proxmox round trip ({rtt * 1000:.0f} ms); "
                    f"{runs[0][1]} Proxmox requests (goal <= 1.5 x)"
                )
    finally:
        server.stop()


# --- 3. burst --------------------------------------------------------------------------------------


def bench_burst(n: int) -> None:
    from migration_guard.demo.pve_server import start_server
    from migration_guard.service.guard import build_service
    from migration_guard.service.refresher import InventoryRefresher

    server = start_server(str(SCENARIO))
    settings = _settings(server)
    scenario = json.loads(SCENARIO.read_text())
    vmids = [v["vmid"] for v in scenario["vms"] if v["node"] == "pve1"]
    targets = ["pve2", "pve3"]
    try:
        server.set_faults(latency_s=0.05)

        async def burst(inventory: bool):
            service = build_service(settings)
            if inventory:
                await InventoryRefresher(service).first_round()
            server.reset_counts()
            try:
                started = time.perf_counter()
                outcomes = await asyncio.gather(
                    *(
                        service.decide(
                            {"vmid": vmids[i % len(vmids)], "target": targets[i % 2], "source": "pve1"}
                        )
                        for i in range(n)
                    )
                )
                return outcomes, time.perf_counter() - started, service.reader.stats.total
            finally:
                await service.close()

        nodes = 1 + len(targets)
        budget = len(vmids) + nodes
        for inventory, state in ((True, "serve after start (inventory read)"), (False, "empty caches")):
            outcomes, took, calls = asyncio.run(burst(inventory))
            requests = server.requests()
            total = sum(requests.values())
            verdicts = {
                v: sum(1 for o in outcomes if o.body["verdict"] == v) for v in ("allow", "deny", "unknown")
            }
            print(
                f"3{'a' if inventory else 'b'}. burst, {state}: {n} concurrent decisions for {len(vmids)} "
                f"VMs of pve1 to {len(targets)} targets in {took * 1000:.0f} ms; {verdicts}"
            )
            print(
                f"   Proxmox HTTP requests: {total} (at most {max(requests.values())} per path); distinct "
                f"VMs + nodes = {len(vmids)} + {nodes} = {budget}: {'met' if total <= budget else 'NOT met'}"
            )
            for path, count in sorted(requests.items(), key=lambda kv: -kv[1]):
                print(f"      {count:4d}  {path}")
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stack", default="standard", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=("warm", "cold", "burst", "workers"))
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.stack, args.redis_url)
        return 0
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if args.only in (None, "warm"):
        bench_warm(args.seconds, args.concurrency, args.rounds)
        bench_warm_asgi(2000)
    if args.only in (None, "workers"):
        bench_workers(args.seconds, args.concurrency, args.rounds)
    if args.only in (None, "cold"):
        bench_cold(5)
    if args.only in (None, "burst"):
        bench_burst(500)
    return 0


if __name__ == "__main__":
    sys.exit(main())
