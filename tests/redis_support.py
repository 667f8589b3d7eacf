"""A private redis-server process for tests that stop and restart Redis on purpose
(never the shared one on 6379)."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import redis as redis_sync


def start_redis(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis_sync.Redis(port=port, socket_timeout=0.5)
    for _ in range(100):
        try:
            client.ping()
            return proc
        except redis_sync.exceptions.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    pytest.skip("could not start a private redis-server")
