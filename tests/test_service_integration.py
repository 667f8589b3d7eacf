"""The service for real: proxmoxer speaking HTTPS to the Proxmox-shaped test server, real Redis
(DB 1 of 127.0.0.1:6379, and a private redis-server for the kill test)."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import socket
import time
from pathlib import Path

import pytest
import redis as redis_sync
from fastapi.testclient import TestClient

from shared.api import create_app
from shared.events import EVENTS_STREAM
from shared.pve_testserver import start_server
from shared.service import build_service
from shared.settings import load_settings
from tests.redis_support import start_redis

pytestmark = pytest.mark.integration

SCENARIO = json.loads((Path(__file__).parent / "fixtures" / "service" / "scenario.json").read_text())
REDIS_URL = "redis://127.0.0.1:6379/1"
TOKEN = "integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _redis_or_skip() -> redis_sync.Redis:
    client = redis_sync.Redis.from_url(REDIS_URL, socket_timeout=1)
    try:
        client.ping()
    except redis_sync.exceptions.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    return client


@pytest.fixture
def redis_db():
    client = _redis_or_skip()
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def scenario(**changes) -> dict:
    sc = copy.deepcopy(SCENARIO)
    sc.update(changes)
    return sc


@pytest.fixture
def pve():
    server = start_server(scenario())
    yield server
    server.stop()


def settings_for(server, redis_url=REDIS_URL, **extra):
    tok = server.token
    values = dict(
        pve_host=server.host_port,
        pve_user=tok["user"],
        pve_token_name=tok["name"],
        pve_token_value=tok["value"],
        pve_verify_ssl=server.ca_path,
        api_tokens=TOKEN,
        pve_cluster_name="lab",
        redis_url=redis_url,
        pve_timeout=2,
    )
    values.update(extra)
    return load_settings(None, **values)


def client_for(settings) -> TestClient:
    service = build_service(settings)
    return TestClient(create_app(service, settings.bearer_tokens()), raise_server_exceptions=False)


def check(c, vmid, target):
    return c.get(f"/v1/vms/{vmid}/check", params={"target": target}, headers=AUTH)


def test_check_over_https_with_real_redis(pve, redis_db):
    with client_for(settings_for(pve)) as c:
        body = check(c, 101, "pve3").json()
        assert body["verdict"] == "deny", body
        assert body["flag_source"] == "qemu-kvm"
        assert "missing-flags" in [r["code"] for r in body["reasons"]]
        assert check(c, 101, "pve2").json()["verdict"] == "allow"
        keys = {k.decode() for k in redis_db.keys("migration-guard:facts:lab:*")}
        assert "migration-guard:facts:lab:node:pve3" in keys and "migration-guard:facts:lab:vms" in keys
        answer = c.post(
            "/v1/decisions",
            json={"vmid": 101, "target": "pve3", "source": "pve1"},
            headers={**AUTH, "Accept": "text/plain"},
        )
        lines = dict(line.split("=", 1) for line in answer.text.splitlines())
        assert (lines["verdict"], lines["code"], lines["exit"]) == ("deny", "missing-flags", "2")
        entries = redis_db.xrange(EVENTS_STREAM)
        assert json.loads(entries[-1][1][b"event"])["id"] == lines["decision"]
        assert c.get("/readyz").json() == {
            "status": "ready",
            "degraded": False,
            "store": "redis",
            "redis": "ok",
            "proxmox": "ok",
            "events_pending": 0,
        }


def test_burst_of_500_decisions_one_proxmox_call_per_resource(pve, redis_db):
    settings = settings_for(pve)
    vmids = [101, 102, 103, 105, 106]  # the VMs of pve1

    async def burst():
        service = build_service(settings)
        try:
            outcomes = await asyncio.gather(
                *(
                    service.decide({"vmid": vmids[i % len(vmids)], "target": "pve2", "source": "pve1"})
                    for i in range(500)
                )
            )
        finally:
            await service.close()
        return outcomes, service.reader.stats.total

    outcomes, logical_calls = asyncio.run(burst())
    counts = pve.requests()
    assert {o.body["verdict"] for o in outcomes} <= {"allow", "deny"}
    assert all(n == 1 for n in counts.values()), counts  # single-flight: one call per resource
    distinct_resources = len(vmids) + 2  # VMs + the two nodes
    assert logical_calls == len(counts)
    # per VM: config, status, precondition; per node: status, machines; plus node list and cpu-flags
    assert sum(counts.values()) <= 3 * len(vmids) + 2 * 2 + 2
    print(
        f"burst: 500 decisions, {len(vmids)} VMs, {sum(counts.values())} HTTP requests "
        f"(<= {distinct_resources} resources x their endpoints)"
    )


def test_token_without_vm_migrate_says_precheck_skipped(redis_db):
    sc = scenario()
    sc["token"] = dict(sc["token"], privileges=["VM.Audit", "Sys.Audit"])
    with start_server(sc) as server, client_for(settings_for(server)) as c:
        body = check(c, 102, "pve2").json()
        assert body["verdict"] == "allow"
        skipped = [r for r in body["reasons"] if r["code"] == "precheck-skipped"]
        assert skipped and "VM.Migrate" in skipped[0]["message"]


def test_node_without_cpuinfo_flags_is_flags_unknown(redis_db):
    with start_server(scenario(pve_version="8.4.1")) as server, client_for(settings_for(server)) as c:
        server.set_faults(drop_flags=["pve3"])
        body = check(c, 102, "pve3").json()
        assert body["verdict"] == "unknown"
        assert body["reasons"][0]["code"] == "flags-unknown"
        assert check(c, 102, "pve2").json()["flag_source"] == "cpuinfo"


def test_rejected_proxmox_token_is_a_502_naming_the_settings(pve, redis_db):
    pve.set_faults(reject_token=True)
    with client_for(settings_for(pve)) as c:
        answer = check(c, 101, "pve2")
        assert answer.status_code == 502
        error = answer.json()["error"]
        assert error["code"] == "proxmox-auth" and "MIGRATION_GUARD_PVE_TOKEN_VALUE" in error["message"]


def test_proxmox_slow_then_down_answers_stale_facts_with_age(pve, redis_db):
    settings = settings_for(pve, pve_timeout=1, cache_vm_ttl=0, cache_list_ttl=0, cache_node_ttl=0)
    with client_for(settings) as c:
        assert check(c, 101, "pve3").json()["verdict"] == "deny"
        pve.set_faults(latency_s=3)  # slower than the 1 s timeout
        started = time.monotonic()
        answer = check(c, 101, "pve3")
        took = time.monotonic() - started
        body = answer.json()
        assert answer.status_code == 200 and body["verdict"] == "deny" and body["stale"] is True
        assert took < 2.0, took
        pve.set_faults(hang=True)  # accepts, never answers
        body = check(c, 101, "pve3").json()
        assert body["verdict"] == "deny" and body["stale"] is True
        assert "stale-facts" in [r["code"] for r in body["reasons"]]
        pve.set_faults()


def test_proxmox_down_without_facts_is_unknown_503(pve, redis_db):
    pve.set_faults(hang=True)
    with client_for(settings_for(pve, pve_timeout=0.5)) as c:
        answer = check(c, 101, "pve3")
        assert answer.status_code == 503
        body = answer.json()
        assert body["verdict"] == "unknown" and body["reasons"][0]["code"] == "cluster-unreachable"
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["proxmox"] == "unreachable"
    pve.set_faults()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




def test_redis_killed_mid_test_service_keeps_answering_and_recovers(pve):
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary")
    port = _free_port()
    proc = start_redis(port)
    try:
        with client_for(settings_for(pve, redis_url=f"redis://127.0.0.1:{port}/0")) as c:
            assert check(c, 101, "pve3").json()["verdict"] == "deny"
            proc.kill()
            proc.wait()
            body = c.post("/v1/decisions", json={"vmid": 101, "target": "pve3"}, headers=AUTH).json()
            assert body["verdict"] == "deny" and body["event_queued"] is True
            assert check(c, 102, "pve2").json()["verdict"] == "allow"  # facts straight from Proxmox
            ready = c.get("/readyz").json()
            assert ready["status"] == "degraded" and ready["redis"] == "down" and ready["events_pending"] == 2
            assert c.get("/v1/decisions", headers=AUTH).json()["decisions"][0]["vmid"] == 101
            proc = start_redis(port)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and c.get("/readyz").json()["events_pending"]:
                time.sleep(0.2)
            ready = c.get("/readyz").json()
            assert ready["status"] == "ready" and ready["events_pending"] == 0
            entries = redis_sync.Redis(port=port).xrange(EVENTS_STREAM)
            assert [json.loads(f[b"event"])["vmid"] for _, f in entries] == [101]
    finally:
        proc.kill()
        proc.wait()
