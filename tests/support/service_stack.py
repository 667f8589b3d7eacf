"""The service's test stack, written once: settings that point the service at a Proxmox-shaped test
server (``migration_guard.demo.pve_server``), a FastAPI app served over real HTTP by uvicorn in a
background thread on a free loopback port, an emptied database of the test session's Redis, and the
hookscript's configuration folder with its token file."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import uvicorn

from migration_guard.service.settings import Settings, load_settings


def settings_for(pve: Any, **overrides: Any) -> Settings:
    """The service's settings for the test server ``pve`` (its address, API token and CA file); every
    other setting (api_tokens, pve_cluster_name, redis_url, pve_timeout, ...) comes from ``overrides``,
    which may also replace the test server's own values."""
    tok = pve.token
    values: dict[str, Any] = {
        "pve_host": pve.host_port,
        "pve_user": tok["user"],
        "pve_token_name": tok["name"],
        "pve_token_value": tok["value"],
        "pve_verify_ssl": pve.ca_path,
    }
    values.update(overrides)
    return load_settings(None, **values)


@contextmanager
def serving(app: Any, start_timeout: float = 15) -> Iterator[str]:
    """Serve ``app`` with uvicorn (lifespan on) in a daemon thread on a free 127.0.0.1 port; yields the
    base URL once the server has started, and stops the server (waiting up to 10 s) on leaving."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def flushed_redis(url: str, **options: Any) -> redis.Redis:
    """A client (``redis.Redis.from_url`` options) of the test Redis database at ``url``, emptied; the
    test is skipped when no test Redis answers."""
    store = redis.Redis.from_url(url, **options)
    try:
        store.ping()
    except redis.ConnectionError:
        pytest.skip("no test Redis (is redis-server installed?)")
    store.flushdb()
    return store


def hook_confdir(tmp_path: Path, token: str) -> Path:
    """The hookscript's configuration folder ``tmp_path/etc`` holding the service token file (mode 0600)."""
    d = tmp_path / "etc"
    d.mkdir()
    (d / "token").write_text(token + "\n")
    (d / "token").chmod(0o600)
    return d
