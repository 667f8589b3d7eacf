"""Helpers for tests that need the Proxmox-shaped HTTPS test server
(shared/migration_guard/demo/pve_server.py).

``pve_server(scenario)`` runs it in-process (a thread); ``pve_process(scenario)`` runs it as
``python -m migration_guard.demo.pve_server`` and waits for its READY line. ``reader_for(server)`` is a
ClusterReader (proxmoxer over HTTPS, CA verified) pointed at it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from migration_guard.cluster.reader import ClusterReader
from migration_guard.demo.pve_server import RunningServer, start_server


@contextlib.contextmanager
def pve_server(scenario: dict | str | Path = "demo", **delays: float) -> Iterator[RunningServer]:
    """The test server in this process (``delays``: ``proxy_timeout_s``, ``auth_failure_delay_s``)."""
    server = start_server(scenario, **delays)
    try:
        yield server
    finally:
        server.stop()


def reader_for(
    server: RunningServer, *, timeout: float = 5.0, verify_ssl: bool | str | None = None, **token
) -> ClusterReader:
    t = dict(server.token) | token
    return ClusterReader(
        str(server.scenario.get("cluster") or "pve"),
        server.host_port,
        t["user"],
        t["name"],
        t["value"],
        server.ca_path if verify_ssl is None else verify_ssl,
        timeout,
    )


@dataclass(slots=True)
class PveProcess:
    url: str
    host_port: str
    ca_path: str
    process: subprocess.Popen


@contextlib.contextmanager
def pve_process(scenario: str | Path = "demo", *, ready_within: float = 20.0) -> Iterator[PveProcess]:
    """The test server as a separate process; stopped with SIGTERM on exit."""
    with tempfile.TemporaryDirectory(prefix="pve-proc-") as state_dir:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "migration_guard.demo.pve_server",
                "--scenario",
                str(scenario),
                "--state-dir",
                state_dir,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(Path(__file__).resolve().parents[2]),
            env=os.environ.copy(),
        )
        try:
            deadline = time.monotonic() + ready_within
            line = proc.stdout.readline() if proc.stdout else ""
            if not line.startswith("READY ") or time.monotonic() > deadline:
                proc.kill()
                _, err = proc.communicate(timeout=5)
                raise RuntimeError(f"pve_testserver did not start: {line!r} {err}")
            _, url, ca = line.split()
            yield PveProcess(
                url=url, host_port=url.removeprefix("https://"), ca_path=ca.removeprefix("ca="), process=proc
            )
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
