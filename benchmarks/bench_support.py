"""What several benchmarks need to run the real service: the ``migration-guard`` command line and
its environment in front of the Proxmox-shaped test server, a free port, and a private redis-server
(none of the tests' helpers: benchmarks import nothing from tests/, which tests/test_architecture.py
holds them to)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def cli_argv(*args: str) -> list[str]:
    """``migration-guard ARGS``: the installed console script beside this interpreter."""
    cli = Path(sys.executable).parent / "migration-guard"
    if cli.is_file():
        return [str(cli), *args]
    return [sys.executable, "-m", "migration_guard.cli.main", *args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def start_private_redis() -> PrivateRedis | None:
    """A redis-server on a free port that keeps nothing on disk, once it answers; None when
    redis-server is not installed or does not start."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        return None
    workdir = tempfile.mkdtemp(prefix="mg-bench-redis-")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [*argv, "--dir", workdir, "--databases", "16"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    client = redis.Redis(port=port, socket_timeout=0.5)
    for _ in range(100):
        if proc.poll() is not None:
            break
        try:
            client.ping()
            return PrivateRedis(proc, port, workdir)
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    shutil.rmtree(workdir, ignore_errors=True)
    return None


def serve_env(pve: Any, port: int, token: str, redis_url: str, state_prefix: str, **extra: str) -> dict:
    """The environment of a ``migration-guard serve`` in front of the Proxmox-shaped test server
    ``pve`` (this shell's own MIGRATION_GUARD_* settings left out): cluster ``lab``, bearer
    ``token``, ``extra`` as further MIGRATION_GUARD_* settings (``PVE_TIMEOUT="10"``)."""
    tok = pve.token
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATION_GUARD_")}
    env.update(
        MIGRATION_GUARD_PVE_HOST=pve.host_port,
        MIGRATION_GUARD_PVE_USER=tok["user"],
        MIGRATION_GUARD_PVE_TOKEN_NAME=tok["name"],
        MIGRATION_GUARD_PVE_TOKEN_VALUE=tok["value"],
        MIGRATION_GUARD_PVE_VERIFY_SSL=pve.ca_path,
        MIGRATION_GUARD_API_TOKENS=token,
        MIGRATION_GUARD_PVE_CLUSTER_NAME="lab",
        MIGRATION_GUARD_LISTEN=f"127.0.0.1:{port}",
        MIGRATION_GUARD_REDIS_URL=redis_url,
        MIGRATION_GUARD_STATE_DIR=tempfile.mkdtemp(prefix=state_prefix),
    )
    env.update({f"MIGRATION_GUARD_{key}": value for key, value in extra.items()})
    return env
