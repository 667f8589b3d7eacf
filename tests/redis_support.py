"""Redis for the tests: a private redis-server process for tests that stop and restart Redis on
purpose (never the shared one on 6379), and ``clean_db``, one emptied database of the shared one."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator

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


@contextlib.contextmanager
def clean_db(url: str) -> Iterator[redis_sync.Redis]:
    """The shared Redis at 127.0.0.1:6379, one database of it emptied before and after (the
    test is skipped when Redis does not answer)."""
    client = redis_sync.Redis.from_url(url, socket_timeout=1)
    try:
        client.ping()
    except redis_sync.exceptions.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()
