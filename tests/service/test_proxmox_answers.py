"""Verdicts on what a real Proxmox answers: pending changes, answers that are not Proxmox's JSON,
machine revisions, a powered-off node still listed online, a 501 that goes away, and the age of
every fact. The service for real (proxmoxer over HTTPS to shared/migration_guard/demo/pve_server.py, Redis DB
9),
and the hookscript run as Proxmox runs it against it (end to end)."""

from __future__ import annotations

import asyncio
import copy
import time

import pytest

from migration_guard.api.app import create_app
from migration_guard.demo.pve_server import start_server
from migration_guard.errors import NodeUnreachable, ProxmoxBadAnswer
from migration_guard.service.guard import build_service
from migration_guard.service.refresher import InventoryRefresher
from tests.fakes.clock import Clock
from tests.fakes.pve import reader_for
from tests.hook.test_hookscript import run_hook, write_conf
from tests.service.test_service_integration import SCENARIO, TOKEN, client_for, service_for, settings_for
from tests.support.redis_server import clean_db, redis_url
from tests.support.service_stack import hook_confdir, serving

pytestmark = pytest.mark.integration

REDIS_URL = redis_url(9)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def cluster() -> dict:
    """The service fixture's cluster (pve1-3 Intel, pve4 AMD, pve3 on QEMU 8.1), plus:
    403: `cpu: host` running on the AMD node with `x86-64-v2-AES` pending (not yet rebooted);
    404: running machine pc-q35-9.2+pve1; pve2's qemu-server knows 9.2 only up to +pve0."""
    sc = copy.deepcopy(SCENARIO)
    host = copy.deepcopy(next(v for v in sc["vms"] if v["vmid"] == 103))
    host.update(vmid=403, node="pve4", name="amdhost01", pending={"cpu": "x86-64-v2-AES"})
    sc["vms"].append(host)
    newer = copy.deepcopy(next(v for v in sc["vms"] if v["vmid"] == 102))
    newer.update(vmid=404, name="q35pve1", running_machine="pc-q35-9.2+pve1")
    sc["vms"].append(newer)
    for node in sc["nodes"]:
        if node["name"] == "pve2":
            node["machine_revisions"] = {"9.2": 0}
    return sc


@pytest.fixture
def redis_db():
    with clean_db(REDIS_URL) as client:
        yield client


@pytest.fixture
def pve():
    server = start_server(cluster(), proxy_timeout_s=30.0)
    yield server
    server.stop()


def check(c, vmid, target, **headers):
    return c.get(f"/v1/vms/{vmid}/check", params={"target": target}, headers=AUTH | headers)


def codes(body) -> list[str]:
    return [r["code"] for r in body["reasons"]]


# --- pending changes ---------------------------------------------------------------------------


def test_running_vm_is_judged_on_its_current_cpu_and_names_the_pending_one(pve, redis_db):
    with client_for(settings_for(pve, redis_url=REDIS_URL)) as c:
        body = check(c, 403, "pve1").json()
        # cpu: host on AMD to an Intel node: the live migration keeps `host` (a vendor switch)
        assert body["verdict"] == "deny" and body["cpu"] == "host", body
        assert "vendor-mismatch" in codes(body)
        assert body["pending_cpu"] == "x86-64-v2-AES"
        note = next(r["message"] for r in body["reasons"] if r["code"] == "pending-cpu")
        assert "next reboot" in note and "would be allow" in note, note
        targets = c.get("/v1/vms/403/targets", headers=AUTH).json()["targets"]
        assert all(t["pending_cpu"] == "x86-64-v2-AES" for t in targets)
        assert all("pending-cpu" in codes(t) for t in targets)
    assert pve.requests().get("/nodes/pve4/qemu/403/config", 0) == 0  # /pending carries both


def test_stopped_vm_is_judged_on_the_cpu_its_next_start_applies(pve, redis_db):
    vm = copy.deepcopy(next(v for v in pve.scenario["vms"] if v["vmid"] == 201))
    vm.update(vmid=205, config={"cpu": "x86-64-v2-AES"}, pending={"cpu": "x86-64-v4"})
    pve.put_vm(vm)
    with client_for(settings_for(pve, redis_url=REDIS_URL)) as c:
        body = check(c, 205, "pve3").json()
        assert body["cpu"] == "x86-64-v4" and body["pending_cpu"] == "x86-64-v4", body
        assert body["verdict"] == "deny" and "missing-flags" in codes(body)


# --- answers that are not Proxmox's JSON -------------------------------------------------------

HOSTILE = ["html", "truncated", "null", "list", "string", "nodata"]


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_200_that_is_not_proxmox_json_is_unknown_never_allow(pve, redis_db, kind):
    with client_for(settings_for(pve, redis_url=REDIS_URL)) as c:
        pve.set_faults(bad_answer=kind, paths=["/nodes/pve1/qemu/102/"])
        answer = c.post("/v1/decisions", json={"vmid": 102, "target": "pve2", "source": "pve1"}, headers=AUTH)
        body = answer.json()
        assert body["verdict"] == "unknown", body
        assert body["code"] == "proxmox-bad-answer" and body["exit"] == 5, body
        message = body["reasons"][0]["message"]
        assert "VM 102" in message and "not Proxmox's JSON" in message or 'no "data"' in message
        assert "Traceback" not in answer.text and pve.token["value"] not in answer.text
        recorded = c.get("/v1/decisions", params={"vmid": 102}, headers=AUTH).json()["decisions"]
        assert recorded and recorded[0]["code"] == "proxmox-bad-answer"


def test_html_page_is_named_in_the_reason(pve, redis_db):
    with client_for(settings_for(pve, redis_url=REDIS_URL)) as c:
        pve.set_faults(bad_answer="html", paths=["/nodes/pve2/status"])
        body = check(c, 102, "pve2").json()
        assert body["verdict"] == "unknown" and codes(body) == ["proxmox-bad-answer"], body
        assert "an HTML page (502 Bad Gateway)" in body["reasons"][0]["message"]


def test_reader_validates_every_path_it_reads(pve):
    reader = reader_for(pve)
    calls = {
        "/nodes": reader.nodes,
        "/cluster/resources": reader.vms,
        "/cluster/qemu/cpu-flags": reader.cluster_cpu_flags,
        "/nodes/pve1/status": lambda: reader.node_facts("pve1"),
        "/nodes/pve1/qemu/101/pending": lambda: reader.vm_config("pve1", 101),
        "/nodes/pve1/qemu/101/status": lambda: reader.vm_status("pve1", 101),
        "/nodes/pve1/qemu/101/migrate": lambda: reader.migrate_precondition("pve1", 101),
    }
    for path, call in calls.items():
        for kind in ("string", "null", "html") + (("object",) if path != "/nodes/pve1/status" else ()):
            if kind == "object" and path in ("/nodes/pve1/qemu/101/migrate",):
                continue
            pve.set_faults(bad_answer=kind, paths=[path])
            with pytest.raises(ProxmoxBadAnswer) as err:
                call()
            assert "Proxmox at" in str(err.value), (path, kind)
    pve.set_faults()


def test_serve_keeps_serving_when_proxmox_answers_garbage_at_start_up(pve, redis_db, caplog):
    pve.set_faults(bad_answer="string", paths=["/nodes", "/cluster/"])
    service = build_service(settings_for(pve, redis_url=REDIS_URL))

    async def start() -> InventoryRefresher:
        refresher = InventoryRefresher(service)
        with caplog.at_level("WARNING", logger="migration_guard.refresher"):
            await refresher.first_round()  # raised a TypeError before: serve exited 3
            await refresher.round()
        return refresher

    refresher = asyncio.run(start())
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "proxmox" in warnings[0].lower(), warnings  # logged once
    assert refresher.failing
    pve.set_faults()
    asyncio.run(service.close())


# --- machine revisions -------------------------------------------------------------------------


def test_machine_revision_the_target_does_not_know_is_denied_naming_qemu_server(pve, redis_db):
    with client_for(settings_for(pve, redis_url=REDIS_URL)) as c:
        body = check(c, 404, "pve2").json()
        assert body["verdict"] == "deny" and "machine-unsupported" in codes(body), body
        message = next(r["message"] for r in body["reasons"] if r["code"] == "machine-unsupported")
        assert "pc-q35-9.2+pve1" in message and "update qemu-server on pve2" in message
        assert check(c, 102, "pve2").json()["verdict"] == "allow"  # +pve0 runs there
        older = check(c, 404, "pve3").json()  # QEMU 8.1: the machine version itself is too new
        assert "update pve-qemu-kvm on pve3" in " ".join(r["message"] for r in older["reasons"])


def test_missing_running_machine_says_the_machine_check_was_skipped(pve, redis_db):
    with client_for(settings_for(pve, redis_url=REDIS_URL)) as c:
        pve.set_faults(qmp_busy=["102"])
        body = check(c, 102, "pve2").json()
        assert body["verdict"] == "allow", body
        assert "machine-check-skipped" in codes(body)


# --- a powered-off node, the caller's budget -----------------------------------------------------


def test_powered_off_node_answers_within_the_callers_budget(pve, redis_db):
    with client_for(settings_for(pve, redis_url=REDIS_URL, pve_timeout=5)) as c:
        check(c, 102, "pve3")  # the shared facts are read
        pve.set_faults(powered_off=["pve2"])
        started = time.monotonic()
        answer = c.post(
            "/v1/decisions",
            json={"vmid": 102, "target": "pve2", "source": "pve1"},
            headers=AUTH | {"X-Migration-Guard-Budget-Ms": "2500"},
        )
        took = time.monotonic() - started
        body = answer.json()
        assert took < 2.5, took
        assert body["verdict"] == "unknown" and body["code"] == "node-unreachable", body
        assert "pve2" in body["line"] and "30 s" in body["line"]
        pve.set_faults()


def test_slow_node_is_that_node_unreachable_not_the_cluster(pve):
    reader = reader_for(pve, timeout=0.5)
    pve.set_faults(powered_off=["pve2"])
    with pytest.raises(NodeUnreachable) as err:
        reader.node_facts("pve2")
    assert "node pve2 did not answer" in str(err.value)
    assert reader.node_facts("pve3").online  # the cluster still answers
    pve.set_faults()


# --- the age of every fact -----------------------------------------------------------------------


def test_old_vm_facts_make_the_answer_stale(pve, redis_db):
    clock = Clock()
    service = service_for(pve, clock, redis_url=REDIS_URL)

    async def go():
        try:
            first = await service.check(102, "pve2", "pve1")
            assert first.body["stale"] is False
            clock.now += 65  # the VM's facts (lifetime 5 s) are 65 s old, the node facts are not
            pve.set_faults(status=500, paths=["/nodes/pve1/qemu/"])
            return (await service.check(102, "pve2", "pve1")).body
        finally:
            await service.close()

    body = asyncio.run(go())
    pve.set_faults()
    assert body["facts_age_s"] >= 65 and body["stale"] is True, body
    assert "stale-facts" in codes(body)


# --- end to end: the hookscript -> the service -> the test server -----------------------------


@pytest.fixture
def live(pve, redis_db):
    """The service over HTTP (uvicorn), as the hook reaches it."""
    settings = settings_for(pve, redis_url=REDIS_URL, pve_timeout=5)
    app = create_app(build_service(settings), settings.bearer_tokens())
    with serving(app) as url:
        yield url


@pytest.fixture
def confdir(tmp_path):
    return hook_confdir(tmp_path, TOKEN)


def test_e2e_pending_cpu_does_not_hide_a_vendor_switch(live, confdir):
    write_conf(confdir, url=live, node="pve1", timeout=10)
    proc, _ = run_hook(confdir, "403", "pre-start", migrated_from="pve4")
    assert proc.returncode == 1, proc.stderr  # the vendor code: `host` AMD -> Intel
    assert "blocked migration of VM 403" in proc.stderr


@pytest.mark.parametrize("kind", ["html", "truncated", "null"])
def test_e2e_bad_proxmox_answer_is_no_decision(live, pve, confdir, kind):
    pve.set_faults(bad_answer=kind, paths=["/nodes/pve1/qemu/102/"])
    write_conf(confdir, url=live, node="pve2", timeout=10, fail="closed")
    proc, _ = run_hook(confdir, "102", "pre-start", migrated_from="pve1")
    assert proc.returncode == 5, proc.stderr
    assert "Proxmox" in proc.stderr and "Traceback" not in proc.stderr


def test_e2e_machine_revision_exit_3(live, confdir):
    write_conf(confdir, url=live, node="pve2", timeout=10)
    proc, _ = run_hook(confdir, "404", "pre-start", migrated_from="pve1")
    assert proc.returncode == 3, proc.stderr
    assert "update qemu-server on pve2" in proc.stderr


def test_e2e_powered_off_target_is_answered_within_the_hooks_budget(live, pve, confdir):
    pve.set_faults(powered_off=["pve2"])
    write_conf(confdir, url=live, node="pve2", timeout=3, fail="closed")
    proc, took = run_hook(confdir, "102", "pre-start", migrated_from="pve1")
    pve.set_faults()
    assert proc.returncode == 5, proc.stderr
    assert took < 3.5, took
    assert "pve2" in proc.stderr and "30 s" in proc.stderr, proc.stderr


def test_a_hanging_node_does_not_mark_proxmox_down(pve, redis_db):
    service = service_for(pve, redis_url=REDIS_URL, pve_timeout=1)

    async def go():
        try:
            await service.check(102, "pve3", "pve1")
            pve.set_faults(powered_off=["pve2"])
            hanging = (await service.check(102, "pve2", "pve1")).body
            return hanging, service.cache._unhealthy_until
        finally:
            pve.set_faults()
            await service.close()

    body, unhealthy_until = asyncio.run(go())
    assert body["verdict"] == "unknown" and codes(body) == ["node-unreachable"], body
    assert "pve2" in body["reasons"][0]["message"]
    assert unhealthy_until == 0.0  # the other nodes' facts are still asked for, not answered stale


def test_cpu_flags_endpoint_appearing_after_an_upgrade_is_used_at_the_next_refresh(redis_db):
    with start_server(dict(cluster(), pve_version="8.4.1")) as old:
        clock = Clock()
        service = service_for(old, clock, redis_url=REDIS_URL)

        async def go():
            try:
                refresher = InventoryRefresher(service)
                await refresher.round()
                before = (await service.check(102, "pve2", "pve1")).body["flag_source"]
                old.scenario["pve_version"] = "9.2.11"  # pve-manager upgraded on every node
                clock.now += service.settings.cache_node_ttl / 2 + 1
                await refresher.round()
                clock.now += service.settings.cache_vm_ttl + 1
                after = (await service.check(102, "pve2", "pve1")).body["flag_source"]
                return before, after
            finally:
                await service.close()

        assert asyncio.run(go()) == ("cpuinfo", "qemu-kvm")
