"""How long the node hookscript's whole run takes (process start to exit) against a warm service.

Goal: at most 1.5 x a bare `python3 -c pass` of the same interpreter on the same machine.
Prints both numbers (median and p90 over --runs runs) and the ratio.

    python benchmarks/hook.py                       # against a warm in-process stand-in service
    python benchmarks/hook.py --url URL --token T   # against a running service (e.g. `serve --demo`)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOOK = Path(__file__).resolve().parent.parent / "hookscript" / "migration-guard-hook"
ANSWER = (
    b"verdict=deny\ncode=vendor-mismatch\nexit=1\ndecision=bench\n"
    b"line=blocked migration of VM 101 (web01) from pve1 to pve3: vendor mismatch\nend=1\n"
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, *args: object) -> None:
        pass


def interpreter() -> str:
    """The interpreter of the hook's shebang (the one Proxmox will run)."""
    first = HOOK.read_text().splitlines()[0]
    return first[2:].split()[0]


def timed(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append((time.perf_counter() - start) * 1000)
        if proc.returncode not in (0, 1, 2, 3, 4):
            sys.exit(f"hook failed (exit {proc.returncode}): {proc.stderr.decode().strip()}")
    return times


def describe(times: list[float]) -> str:
    p90 = statistics.quantiles(times, n=10)[-1]
    return f"median {statistics.median(times):6.1f} ms   p90 {p90:6.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--url", help="a running service (default: an in-process stand-in)")
    parser.add_argument("--token", default="", help="its token")
    parser.add_argument("--vmid", default="101")
    parser.add_argument("--source", default="pve1")
    parser.add_argument("--target", default="pve3")
    args = parser.parse_args()

    server = None
    url = args.url
    if not url:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
    python = interpreter()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "hook.conf"
        conf.write_text(f"url = {url}\nnode = {args.target}\ntimeout = 5\n")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "MIGRATION_GUARD_CONFIG": str(conf),
            "PVE_MIGRATED_FROM": args.source,
        }
        if args.token:
            env["MIGRATION_GUARD_TOKEN"] = args.token
        hook_argv = [str(HOOK), args.vmid, "pre-start"]
        timed(hook_argv, env, 5)  # warm the service, its caches and the page cache
        timed([python, "-c", "pass"], env, 5)
        bare = timed([python, "-c", "pass"], env, args.runs)
        hook = timed(hook_argv, env, args.runs)
        plain = timed(hook_argv, {**env, "PVE_MIGRATED_FROM": ""}, args.runs)
    if server:
        server.shutdown()
    ratio = statistics.median(hook) / statistics.median(bare)
    print(f"service: {url if args.url else 'in-process stand-in ' + url}; {args.runs} runs each; {python}")
    print(f"bare `{python} -c pass`:          {describe(bare)}")
    print(f"hook, incoming migration (POST): {describe(hook)}")
    print(f"hook, ordinary start (no POST):  {describe(plain)}")
    print(f"ratio hook/bare (medians): {ratio:.2f} (goal <= 1.50: {'met' if ratio <= 1.5 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
