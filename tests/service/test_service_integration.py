"""The service for real: proxmoxer speaking HTTPS to the Proxmox-shaped test server, real Redis
(DB 1 of the test session's private Redis, and a private redis-server for the kill test)."""

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

from migration_guard.api.app import create_app
from migration_guard.demo.pve_server import start_server
from migration_guard.service.guard import build_service
from migration_guard.store.events import DECISIONS_STREAM, EVENTS_STREAM
from tests.fakes.clock import Clock
from tests.support import service_stack as stack
from tests.support.redis_server import clean_db, redis_url, start_redis

pytestmark = pytest.mark.integration

SCENARIO = json.loads((Path(__file__).parents[1] / "fixtures" / "service" / "scenario.json").read_text())
REDIS_URL = redis_url(1)
TOKEN = "integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def redis_db():
    with clean_db(REDIS_URL) as client:
        yield client


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
    values = dict(
        api_tokens=TOKEN, pve_cluster_name="lab", redis_url=redis_url, pve_timeout=2, readyz_cache_s=0
    )
    values.update(extra)
    return stack.settings_for(server, **values)


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
        assert c.get("/readyz", headers=AUTH).json() == {
            "status": "ready",
            "degraded": False,
            "store": "redis",
            "redis": "ok",
            "proxmox": "ok",
            "events_pending": 0,
        }


def test_a_node_without_a_kvm_report_is_judged_on_its_cpuinfo(pve, redis_db):
    """pve4 (EPYC 7003) has no recorded KVM report: Proxmox's /cluster/qemu/cpu-flags names it
    under no flag, as for a node whose pvestatd wrote no cpuflags-kvm entry. That is "no report
    for this node", not "its KVM offers nothing": its cpuinfo flags decide, while the nodes with a
    report are still judged on QEMU's own names."""
    with client_for(settings_for(pve)) as c:
        v2 = check(c, 102, "pve4").json()  # x86-64-v2-AES: every x86-64 server CPU of the last decade
        assert (v2["verdict"], v2["flag_source"]) == ("allow", "cpuinfo"), v2
        v4 = check(c, 101, "pve4").json()  # x86-64-v4: AVX-512, which an EPYC 7003 does not have
        assert (v4["verdict"], v4["flag_source"]) == ("deny", "cpuinfo"), v4
        missing = next(r for r in v4["reasons"] if r["code"] == "missing-flags")
        assert "avx512" in missing["message"] and "sse4" not in missing["message"]
        assert check(c, 101, "pve2").json()["flag_source"] == "qemu-kvm"


@pytest.mark.parametrize("inventory", [True, False], ids=["running-service", "empty-caches"])
def test_burst_of_500_decisions_one_proxmox_call_per_resource(pve, redis_db7, inventory):
    """A node evacuation: 500 hook decisions at once for the VMs of pve1 (real proxmoxer over
    HTTPS, real Redis). ``running-service``: the refresher's round has read nodes and the VM list,
    as in a running ``serve``; ``empty-caches``: the burst is the service's first request."""
    from migration_guard.service.refresher import InventoryRefresher

    settings = settings_for(pve, redis_url=REDIS_URL_7)
    vmids = sorted(v["vmid"] for v in SCENARIO["vms"] if v["node"] == "pve1")
    targets = ["pve2", "pve3"]
    asked = [
        {"vmid": vmids[i % len(vmids)], "target": targets[(i // len(vmids)) % 2], "source": "pve1"}
        for i in range(500)
    ]

    async def burst():
        service = build_service(settings)
        try:
            if inventory:
                await InventoryRefresher(service).round()
            pve.reset_counts()
            outcomes = await asyncio.gather(*(service.decide(dict(r)) for r in asked))
            return outcomes, service.vm_status.node_reads
        finally:
            await service.close()

    outcomes, node_reads = asyncio.run(burst())
    counts = pve.requests()
    assert all(n == 1 for n in counts.values()), counts  # single-flight: each path at most once
    assert not [p for p in counts if p.endswith("/migrate")], counts  # the hook's decisions never ask
    assert "/cluster/resources" not in counts  # the hook names the source node
    configs = {f"/nodes/pve1/qemu/{v}/pending" for v in vmids}
    assert configs <= set(counts)
    statuses = [p for p in counts if p.endswith("/status/current")]
    assert len(statuses) <= 1 and counts["/nodes/pve1/qemu"] == 1 and node_reads == 1
    nodes = ["pve1", *targets]
    node_paths = {
        p
        for n in nodes
        for p in (
            f"/nodes/{n}/status",
            f"/nodes/{n}/capabilities/qemu/machines",
            f"/nodes/{n}/version",  # the node's Proxmox release
            f"/nodes/{n}/capabilities/qemu/cpu",  # the CPU types it accepts
        )
    }
    if inventory:
        assert sum(counts.values()) <= len(vmids) + len(nodes), counts
        assert set(counts) == configs | {"/nodes/pve1/qemu", *statuses}
    else:
        cluster_wide = {"/nodes", "/cluster/qemu/cpu-flags"}
        assert set(counts) - configs - {"/nodes/pve1/qemu", *statuses} <= cluster_wide | node_paths
    # every answer for one (VM, target) is the same, and judged on the CPU and machine only
    seen: dict[tuple[int, str], tuple[str, frozenset[str]]] = {}
    for request, outcome in zip(asked, outcomes, strict=True):
        assert outcome.verdict is not None
        got = (outcome.verdict.verdict, frozenset(r.code for r in outcome.verdict.reasons))
        assert seen.setdefault((request["vmid"], request["target"]), got) == got
    assert len(seen) == len(vmids) * len(targets)
    for (vmid, target), (verdict, codes) in seen.items():
        assert not codes & {"local-resources", "storage-unavailable", "precheck-skipped"}, (vmid, target)
        if target == "pve2":  # the same CPU and QEMU as pve1
            assert verdict == "allow", (vmid, codes)
    assert seen[(101, "pve3")] == ("deny", frozenset({"missing-flags"}))  # x86-64-v4 on Broadwell
    assert seen[(106, "pve3")][0] == "deny" and "machine-unsupported" in seen[(106, "pve3")][1]
    assert seen[(104, "pve3")] == ("allow", frozenset({"bypassed"}))


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
        assert took < 2.9, took  # under the 3 s Proxmox takes: the answer did not wait for it
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
        ready = c.get("/readyz", headers=AUTH)
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
            ready = c.get("/readyz", headers=AUTH).json()
            assert ready["status"] == "degraded" and ready["redis"] == "down" and ready["events_pending"] == 2
            assert c.get("/v1/decisions", headers=AUTH).json()["decisions"][0]["vmid"] == 101
            proc = start_redis(port)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and c.get("/readyz", headers=AUTH).json()["events_pending"]:
                time.sleep(0.2)
            ready = c.get("/readyz", headers=AUTH).json()
            assert ready["status"] == "ready" and ready["events_pending"] == 0
            entries = redis_sync.Redis(port=port).xrange(EVENTS_STREAM)
            assert [json.loads(f[b"event"])["vmid"] for _, f in entries] == [101]
    finally:
        proc.kill()
        proc.wait()


# --- node-wide VM status, one precondition per VM, none for the hook, the last VM list's guess ------
# (real Redis DB 7 below; the clock is the service's own, moved forward to age facts without waiting)

REDIS_URL_7 = redis_url(7)


@pytest.fixture
def redis_db7():
    with clean_db(REDIS_URL_7) as client:
        yield client


def service_for(server, clock=time.time, redis_url=REDIS_URL_7, **extra):
    """build_service's service, with the clock of its cache given (to age facts without waiting)."""
    from migration_guard.service.clusters import default_endpoint, reader_for
    from migration_guard.service.guard import GuardService
    from migration_guard.store.redis_store import Store, connect

    settings = settings_for(server, redis_url=redis_url, **extra)
    redis_client, kind = connect(settings.redis_url)
    return GuardService(
        settings, reader_for(default_endpoint(settings), settings), Store(redis_client, kind), clock=clock
    )


def _client7(server, clock=time.time, **extra) -> TestClient:
    """client_for over Redis DB 7, with the service's clock given."""
    service = service_for(server, clock, **extra)
    return TestClient(create_app(service, service.settings.bearer_tokens()), raise_server_exceptions=False)


def _decide(c, vmid, target, source="pve1"):
    return c.post("/v1/decisions", json={"vmid": vmid, "target": target, "source": source}, headers=AUTH)


def _codes(body) -> set[str]:
    return {r["code"] for r in body["reasons"]}


def _migrates(server) -> dict[str, int]:
    return {p: n for p, n in server.requests().items() if p.endswith("/migrate")}


PRECHECK_CODES = {"local-resources", "local-disks", "storage-unavailable", "precheck-skipped"}


def test_hook_decision_is_judged_on_cpu_only_while_the_check_asks_proxmox(pve, redis_db7):
    with _client7(pve) as c:
        pve.reset_counts()
        decision = _decide(c, 105, "pve2").json()  # 105 has usb0, Proxmox blocks it toward pve2
        assert decision["verdict"] == "allow" and decision["exit"] == 0, decision
        assert not _codes(decision) & PRECHECK_CODES
        assert _migrates(pve) == {}
        body = check(c, 105, "pve2").json()
        assert body["verdict"] == "deny", body
        assert {"local-resources", "storage-unavailable"} <= _codes(body)
        assert all("usb0" in r["message"] for r in body["reasons"] if r["code"] in PRECHECK_CODES)
        assert _migrates(pve) == {"/nodes/pve1/qemu/105/migrate": 1}
        # the precondition is cached now: the hook's decision still does not use it
        again = _decide(c, 105, "pve2").json()
        assert again["verdict"] == "allow" and not _codes(again) & PRECHECK_CODES
        # one precondition call answers every target: a check toward pve3 asks nothing more
        other = check(c, 105, "pve3").json()
        assert "storage-unavailable" not in _codes(other) and "local-resources" in _codes(other)
        assert _migrates(pve) == {"/nodes/pve1/qemu/105/migrate": 1}


def test_targets_asks_the_precondition_once_per_vm_each_target_its_own_blockers(pve, redis_db7):
    with _client7(pve) as c:
        pve.reset_counts()
        body = c.get("/v1/vms/105/targets", headers=AUTH).json()
        assert _migrates(pve) == {"/nodes/pve1/qemu/105/migrate": 1}
        by_target = {t["target"]: t for t in body["targets"]}
        assert set(by_target) == {"pve2", "pve3", "pve4", "pve5"}
        assert "storage-unavailable" in _codes(by_target["pve2"])
        blocked = [r["message"] for r in by_target["pve2"]["reasons"] if r["code"] == "storage-unavailable"]
        assert "pve2" in blocked[0] and "usb0" in blocked[0]
        for name in ("pve3", "pve4"):  # not blocked by Proxmox; the local usb0 still counts
            assert "storage-unavailable" not in _codes(by_target[name]), by_target[name]
            assert "local-resources" in _codes(by_target[name])
        assert _codes(by_target["pve5"]) == {"target-offline"}

        pve.reset_counts()
        body = c.get("/v1/vms/102/targets", headers=AUTH).json()
        assert _migrates(pve) == {"/nodes/pve1/qemu/102/migrate": 1}
        for target in body["targets"]:
            assert not _codes(target) & PRECHECK_CODES, target


def test_locked_vm_check_says_precheck_skipped_with_proxmox_message(pve, redis_db7):
    vm = copy.deepcopy(next(v for v in SCENARIO["vms"] if v["vmid"] == 103))
    vm["config"]["lock"] = "backup"
    pve.put_vm(vm)
    with _client7(pve) as c:
        answer = check(c, 103, "pve2")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        skipped = [r["message"] for r in body["reasons"] if r["code"] == "precheck-skipped"]
        assert len(skipped) == 1 and "VM is locked (backup)" in skipped[0], body
        assert body["verdict"] == "allow"  # the lock says nothing about the CPU
        # a migration holds exactly this lock while the hook asks: the decision does not trip on it
        pve.reset_counts()
        decision = _decide(c, 103, "pve2").json()
        assert decision["verdict"] == "allow" and "precheck-skipped" not in _codes(decision)
        assert _migrates(pve) == {}


def _moved(vmid: int, node: str) -> dict:
    vm = copy.deepcopy(next(v for v in SCENARIO["vms"] if v["vmid"] == vmid))
    vm["node"] = node
    return vm


def test_check_without_source_finds_a_vm_that_moved_after_the_list_expired(pve, redis_db7):
    clock = Clock()
    with _client7(pve, clock) as c:
        assert check(c, 102, "pve3").json()["source"] == "pve1"  # the VM list is cached now
        pve.put_vm(_moved(102, "pve2"))
        clock.now += 11.0  # the VM list (10 s) and the VM's facts (5 s) are expired
        pve.reset_counts()
        answer = check(c, 102, "pve3")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["source"], body["target"], body["verdict"]) == ("pve2", "pve3", "allow"), body
        assert "precheck-skipped" not in _codes(body)  # asked on the VM's real node
        requests = pve.requests()
        # the last list's guess first (the VM is not there: its status or config read fails, the
        # other one is cancelled, sent or not), then the list again, then the VM where it is
        guessed = [p for p in requests if p.startswith("/nodes/pve1/qemu/102/")]
        assert guessed and all(requests[p] == 1 for p in guessed), requests
        assert requests.get("/cluster/resources") == 1, requests
        assert requests.get("/nodes/pve2/qemu/102/pending") == 1, requests
        assert requests.get("/nodes/pve2/qemu/102/migrate") == 1, requests


def test_check_without_source_uses_an_expired_lists_guess_without_reading_the_list(pve, redis_db7):
    clock = Clock()
    with _client7(pve, clock) as c:
        assert check(c, 102, "pve3").json()["source"] == "pve1"
        clock.now += 11.0
        pve.reset_counts()
        body = check(c, 102, "pve3").json()
        assert (body["source"], body["verdict"]) == ("pve1", "allow"), body
        requests = pve.requests()
        assert "/cluster/resources" not in requests, requests  # the guess was right: no list read
        assert requests.get("/nodes/pve1/qemu/102/pending") == 1, requests


def test_check_without_source_finds_a_vm_that_moved_while_the_list_is_fresh(pve, redis_db7):
    clock = Clock()
    with _client7(pve, clock) as c:
        assert check(c, 102, "pve3").json()["source"] == "pve1"
        pve.put_vm(_moved(102, "pve2"))
        clock.now += 6.0  # the VM's facts (5 s) are expired, the VM list (10 s) is not
        answer = check(c, 102, "pve3")
        assert answer.status_code == 200, answer.text
        assert answer.json()["source"] == "pve2"


def test_burst_of_500_decisions_records_every_decision_with_redis_up(pve, redis_db7):
    settings = settings_for(pve, redis_url=REDIS_URL_7)

    async def burst():
        service = build_service(settings)
        try:
            outcomes = await asyncio.gather(
                *(service.decide({"vmid": 101, "target": "pve3", "source": "pve1"}) for _ in range(500))
            )
            # a busy machine may make a Redis command miss its deadline (then the entry is
            # queued): what counts is that every one is written, once, within a generous time
            deadline = time.monotonic() + 60
            while service.events.pending and time.monotonic() < deadline:
                await service.events.flush()
                await asyncio.sleep(0.2)
            return outcomes, service.events.pending
        finally:
            await service.close()

    outcomes, pending = asyncio.run(burst())
    assert all(o.body["verdict"] == "deny" for o in outcomes)
    assert pending == 0
    ids = sorted(o.body["decision_id"] for o in outcomes)
    assert len(set(ids)) == 500
    decisions = [json.loads(f[b"decision"])["id"] for _, f in redis_db7.xrange(DECISIONS_STREAM)]
    events = [json.loads(f[b"event"])["id"] for _, f in redis_db7.xrange(EVENTS_STREAM)]
    assert sorted(decisions) == ids and sorted(events) == ids  # every one, exactly once


def test_an_offline_target_in_the_node_list_is_not_asked(pve, redis_db7):
    pve.set_faults(node_offline="pve4")
    clock = Clock()
    with _client7(pve, clock) as c:
        assert c.get("/v1/cluster", headers=AUTH).status_code == 200  # the node list: pve4 offline
        pve.reset_counts()
        body = check(c, 101, "pve4").json()
        assert (body["verdict"], body["reasons"][0]["code"]) == ("deny", "target-offline"), body
        assert not [p for p in pve.requests() if p.startswith("/nodes/pve4")], pve.requests()
        # back online: the renewed node list says so, and the target is read after all
        pve.set_faults()
        clock.now += 11  # the node list expired
        body = check(c, 102, "pve4").json()
        assert body["verdict"] == "allow", body
        assert "/nodes/pve4/status" in pve.requests()
