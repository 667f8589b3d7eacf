"""How long the node hookscript's whole run takes (process start to exit) against the real service.

Starts the Proxmox-shaped test server and the production entry ``migration-guard serve`` in its
own process in front of it (embedded store), warms it, then runs, alternating in every round:
the hook for an incoming migration (its POST /v1/decisions), the hook at an ordinary VM start (no
POST), and the two anchors ``python3 -c pass`` and ``python3 -I -S -c pass`` (the hook's own
flags) of the interpreter in the hook's shebang. Alternating keeps a loaded machine's swings out
of the ratios. Goal: hook for an incoming migration <= 1.25 x ``python3 -c pass``.

    python benchmarks/hook.py [--runs 40]
    python benchmarks/hook.py --url URL --token T   # against a service already running
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HOOK = ROOT / "hookscript" / "migration-guard-hook"
SCENARIO = ROOT / "tests" / "fixtures" / "service" / "scenario.json"
TOKEN = "bench-hook-token"
GOAL = 1.25


def interpreter() -> str:
    """The interpreter of the hook's shebang (the one Proxmox will run)."""
    first = HOOK.read_text().splitlines()[0]
    return first[2:].split()[0]


def once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = (time.perf_counter() - start) * 1000
    if proc.returncode not in (0, 1, 2, 3, 4):
        sys.exit(f"{argv[0]} failed (exit {proc.returncode}): {proc.stderr.decode().strip()}")
    return took


def describe(times: list[float]) -> str:
    p90 = statistics.quantiles(times, n=10)[-1]
    return f"median {statistics.median(times):6.1f} ms   p90 {p90:6.1f} ms"


def start_serve():
    """The test server and ``migration-guard serve`` (a process) in front of it: (url, stop)."""
    import httpx
    from bench_support import cli_argv, free_port, serve_env

    from migration_guard.demo.pve_server import start_server

    pve = start_server(json.loads(SCENARIO.read_text()))
    port = free_port()
    env = serve_env(pve, port, TOKEN, "memory://", "bench-hook-state-")
    proc = subprocess.Popen(cli_argv("serve", "--log-level", "warning"), env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.kill()
        sys.exit("migration-guard serve did not start")

    def stop() -> None:
        proc.terminate()
        proc.wait(10)
        pve.stop()

    return url, stop


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=40, help="alternating rounds")
    parser.add_argument("--url", help="a running service (default: start `migration-guard serve`)")
    parser.add_argument("--token", default=TOKEN, help="its token")
    parser.add_argument("--vmid", default="101")
    parser.add_argument("--source", default="pve1")
    parser.add_argument("--target", default="pve3")
    args = parser.parse_args()

    stop = None
    url = args.url
    if not url:
        url, stop = start_serve()
    python = interpreter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            conf = Path(tmp) / "hook.conf"
            conf.write_text(f"url = {url}\nnode = {args.target}\ntimeout = 5\n")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "MIGRATION_GUARD_CONFIG": str(conf),
                "MIGRATION_GUARD_TOKEN": args.token,
                "PVE_MIGRATED_FROM": args.source,
            }
            kinds = {
                "hook, incoming migration (POST)": ([str(HOOK), args.vmid, "pre-start"], env),
                "hook, ordinary start (no POST)": (
                    [str(HOOK), args.vmid, "pre-start"],
                    {**env, "PVE_MIGRATED_FROM": ""},
                ),
                f"anchor `{python} -c pass`": ([python, "-c", "pass"], env),
                f"anchor `{python} -I -S -c pass`": ([python, "-I", "-S", "-c", "pass"], env),
            }
            times: dict[str, list[float]] = {k: [] for k in kinds}
            for _ in range(5):  # warm the service, its caches, the bytecode and the page cache
                for argv, e in kinds.values():
                    once(argv, e)
            for _ in range(args.runs):
                for name, (argv, e) in kinds.items():
                    times[name].append(once(argv, e))
    finally:
        if stop is not None:
            stop()
    where = url if args.url else f"`migration-guard serve` (its own process, embedded store) at {url}"
    print(f"service: {where}; {args.runs} alternating rounds; {python}")
    for name, values in times.items():
        print(f"   {name:<40} {describe(values)}")
    hook = statistics.median(times["hook, incoming migration (POST)"])
    plain = statistics.median(times["hook, ordinary start (no POST)"])
    bare = statistics.median(times[f"anchor `{python} -c pass`"])
    isolated = statistics.median(times[f"anchor `{python} -I -S -c pass`"])
    verdict = "met" if round(hook / bare, 2) <= GOAL else f"NOT met by {hook / bare - GOAL:.2f}"
    print(
        f"   ratio hook (POST) / `-c pass`: {hook / bare:.2f} (goal <= {GOAL}: {verdict}); "
        f"/ `-I -S -c pass`: {hook / isolated:.2f}; ordinary start / `-c pass`: {plain / bare:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
