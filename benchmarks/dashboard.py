"""The dashboard's matrix page for a big cluster: 1,000 VMs x 32 nodes by default (31,000 cells).

The real app (API + dashboard) over uvicorn on a loopback port, the in-memory cluster reader of
benchmarks/matrix.py (what the service adds, not Proxmox's time to list 1,000 VM configs), the
embedded store. Signed in through the login form like a browser; then times, per page asked:
the HTTP answer (first = facts loaded and every cell computed; then warm), and, when Debian's
chromium and chromedriver are installed, the page load in headless Chromium (navigation start
to the load event, CSS and JS included). Goal: the page loads in under 2 s.

Run: .venv/bin/python benchmarks/dashboard.py [--vms 1000] [--nodes 32] [--rounds 5] [--no-browser]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.matrix import big_service  # noqa: E402

PAGES = [
    ("matrix, first 50 rows", "/ui/matrix"),
    ("most blocked first", "/ui/matrix?sort=blocked"),
    ("filter verdict=deny, 200 rows", "/ui/matrix?verdict=deny&per_page=200"),
    ("last page", "/ui/matrix?page=20"),
]


def serve(app) -> tuple[str, object, threading.Thread]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


def browser_times(url: str, token: str, rounds: int) -> list[tuple[str, float]] | None:
    if not (os.access("/usr/bin/chromium", os.X_OK) and os.access("/usr/bin/chromedriver", os.X_OK)):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url + "/ui/login")
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "sign-in").click()
        out = []
        for name, path in PAGES:
            took = []
            for _ in range(rounds):
                driver.get(url + path)
                took.append(
                    driver.execute_script(
                        "const t = performance.getEntriesByType('navigation')[0]; "
                        "return t.loadEventEnd - t.startTime"
                    )
                    / 1000
                )
            out.append((name, statistics.median(took)))
        return out
    finally:
        driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()

    import httpx

    from migration_guard.api.app import create_app

    token = "bench-matrix-token"
    app = create_app(big_service(args.vms, args.nodes), (token,))
    url, server, thread = serve(app)
    try:
        with httpx.Client(base_url=url, timeout=120) as c:
            form = c.get("/ui/login").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
            if c.post("/ui/login", data={"csrf": csrf, "token": token}).status_code != 303:
                raise SystemExit("the benchmark could not sign in")
            print(f"dashboard: {args.vms:,} VMs x {args.nodes} nodes, real HTTP (uvicorn), in-memory reader")
            for i, (name, path) in enumerate(PAGES):
                took = []
                for _ in range(args.rounds + (1 if i == 0 else 0)):
                    started = time.perf_counter()
                    answer = c.get(path)
                    took.append(time.perf_counter() - started)
                    if answer.status_code != 200:
                        raise SystemExit(f"{path}: HTTP {answer.status_code}")
                first = f"first {took.pop(0):.2f} s (facts loaded, every cell computed), " if i == 0 else ""
                print(
                    f"  HTTP   {name:32} {first}median {statistics.median(took):.3f} s, "
                    f"max {max(took):.3f} s, {len(answer.content) / 1e3:,.0f} kB"
                )
        if not args.no_browser:
            times = browser_times(url, token, args.rounds)
            if times is None:
                print("  browser: /usr/bin/chromium or /usr/bin/chromedriver missing; skipped")
            for name, took in times or []:
                verdict = "met" if took < 2 else "NOT met"
                print(
                    f"  Chromium {name:30} load {took:.3f} s (median of {args.rounds}; goal < 2 s: {verdict})"
                )
    finally:
        server.should_exit = True
        thread.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
