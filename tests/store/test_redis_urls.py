"""The store's Redis URLs: ``rediss://`` (TLS, against a local redis-server with TLS on),
``redis+sentinel://`` (against a local redis-server master and a Sentinel watching it), and the
parsing of the Sentinel form with its clear errors."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis as redis_sync

from migration_guard.errors import ConfigError, StoreUnavailable
from migration_guard.service.settings import load_settings
from migration_guard.store.redis_store import Store, connect, parse_sentinel_url
from tests.support.redis_server import free_port

REDIS = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")


def test_sentinel_url_parts():
    parts = parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1:26379,sentinel-b:26380/mymaster/2")
    assert parts == {
        "sentinels": [("10.0.0.1", 26379), ("sentinel-b", 26380)],
        "service": "mymaster",
        "db": 2,
        "username": None,
        "password": "s3cret",
    }
    assert parse_sentinel_url("redis+sentinel://h:1/svc")["db"] == 0


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h:26379", "no service name"),
        ("redis+sentinel://h/svc/0", "is not host:port"),
        ("redis+sentinel://h:26379/svc/zero", "is not service[/db]"),
    ],
)
def test_bad_sentinel_url_is_one_clear_line(url, says):
    with pytest.raises(ConfigError) as err:
        connect(url)
    assert says in str(err.value) and "MIGRATION_GUARD_REDIS_URL" in str(err.value)


def test_settings_take_tls_and_sentinel_urls():
    for url in ("rediss://r.example:6380/0", "redis+sentinel://s1:26379,s2:26379/mymaster/0"):
        assert load_settings(None, redis_url=url).redis_url == url
    with pytest.raises(ConfigError, match="redis\\+sentinel://"):
        load_settings(None, redis_url="sentinel://s1:26379")


def _start(argv: list[str], port: int, **client) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = redis_sync.Redis(host="127.0.0.1", port=port, socket_timeout=0.5, **client)
    for _ in range(100):
        if proc.poll() is not None:
            pytest.fail(f"{argv[0]} exited at start ({proc.returncode})")
        try:
            probe.ping()
            return proc
        except (redis_sync.exceptions.ConnectionError, redis_sync.exceptions.TimeoutError):
            time.sleep(0.05)
    proc.kill()
    pytest.fail(f"{argv[0]} did not answer on port {port}")


def _stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(10)


async def _set_get(url: str) -> str:
    client, kind = connect(url)
    store = Store(client, kind)
    try:
        await store.run(lambda r: r.set("migration-guard:test:url", "ok"))
        return str(await store.run(lambda r: r.get("migration-guard:test:url")))
    finally:
        await store.close()


@needs_redis
def test_rediss_url_against_a_tls_redis(tmp_path: Path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    port = free_port()
    argv = [
        REDIS,
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    argv += [
        "--tls-cert-file",
        str(cert_file),
        "--tls-key-file",
        str(key_file),
        "--tls-ca-cert-file",
        str(ca_file),
    ]
    argv += ["--tls-auth-clients", "no"]
    proc = _start(argv, port, ssl=True, ssl_ca_certs=str(ca_file))
    try:
        assert asyncio.run(_set_get(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca_file}")) == "ok"
        # a certificate the client does not trust: the store is down, said in one line
        with pytest.raises(StoreUnavailable, match="Redis is down"):
            asyncio.run(_set_get(f"rediss://127.0.0.1:{port}/0"))
        # plain redis:// to the TLS port: no answer it can read, the store is down, not a crash
        with pytest.raises(StoreUnavailable):
            asyncio.run(_set_get(f"redis://127.0.0.1:{port}/0"))
    finally:
        _stop(proc)


@needs_redis
def test_sentinel_url_finds_the_master(tmp_path: Path):
    master_port, sentinel_port = free_port(), free_port()
    master = _start(
        [REDIS, "--port", str(master_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        master_port,
    )
    conf = tmp_path / "sentinel.conf"  # Sentinel rewrites its file: one of its own
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor guardmaster 127.0.0.1 {master_port} 1\n"
    )
    sentinel = _start([REDIS, str(conf), "--sentinel"], sentinel_port)
    try:
        assert asyncio.run(_set_get(f"redis+sentinel://127.0.0.1:{sentinel_port}/guardmaster/3")) == "ok"
        on_master = redis_sync.Redis(port=master_port, db=3, decode_responses=True)
        assert on_master.get("migration-guard:test:url") == "ok"
        # a service the Sentinel does not watch: down, not a traceback
        with pytest.raises(StoreUnavailable):
            asyncio.run(_set_get(f"redis+sentinel://127.0.0.1:{sentinel_port}/nosuchmaster/0"))
    finally:
        _stop(sentinel, master)
