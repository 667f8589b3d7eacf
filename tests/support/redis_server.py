"""Redis for the tests: the session's private redis-server (started by ``tests/conftest.py``, or the
one ``MIGRATION_GUARD_TEST_REDIS`` names), ``redis_url(db)`` for one database of it, ``clean_db`` for
one emptied database, and ``start_redis`` for tests that stop and restart a Redis of their own."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis as redis_sync

ENV = "MIGRATION_GUARD_TEST_REDIS"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PrivateRedis:
    proc: subprocess.Popen
    port: int
    workdir: str

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _spawn(binary: str, port: int, *extra: str) -> subprocess.Popen | None:
    """A redis-server on ``port`` that keeps nothing on disk, once it answers a PING (None when it
    exited or did not answer within 5 s)."""
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis_sync.Redis(port=port, socket_timeout=0.5)
    for _ in range(100):
        if proc.poll() is not None:
            return None
        try:
            client.ping()
            return proc
        except redis_sync.exceptions.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    return None


def start_private_redis() -> PrivateRedis | None:
    """A redis-server of this test session on a free port; None when redis-server is missing (the
    tests that need Redis then skip with that reason)."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    workdir = tempfile.mkdtemp(prefix="mg-test-redis-")
    for _ in range(5):
        port = free_port()
        proc = _spawn(binary, port, "--dir", workdir, "--databases", "16")
        if proc is not None:
            return PrivateRedis(proc, port, workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    return None


def redis_url(db: int) -> str:
    """One database of the test session's Redis (an unreachable address when there is none, so the
    tests that need it skip)."""
    base = os.environ.get(ENV, "redis://127.0.0.1:1")
    return f"{base.rstrip('/')}/{db}"


def start_redis(port: int) -> subprocess.Popen:
    """A redis-server of a test's own on ``port`` (for tests that stop and restart it)."""
    proc = _spawn(shutil.which("redis-server") or "redis-server", port)
    if proc is None:
        pytest.skip("could not start a private redis-server")
    return proc


@contextlib.contextmanager
def clean_db(url: str) -> Iterator[redis_sync.Redis]:
    """One database of the test session's Redis, emptied before and after (the test is skipped
    when that Redis does not answer)."""
    client = redis_sync.Redis.from_url(url, socket_timeout=1)
    try:
        client.ping()
    except redis_sync.exceptions.ConnectionError:
        pytest.skip(f"no test Redis at {url} (is redis-server installed?)")
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()
