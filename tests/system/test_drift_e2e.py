"""The drift alarm end to end: the Proxmox-shaped test server changes a node's CPU facts between two
inventory refreshes (as a microcode update that switches TSX off, and the reboot after it, do), the
service (proxmoxer, real Redis DB 11) records one drift event, lists it at GET /v1/drift, counts it
in /metrics and publishes it on the event stream, and the bot's notifier posts it once to the
Slack-API-shaped test server, naming the flags and the VM that just became unmovable."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient
from slack_sdk import WebClient

from migration_guard.api.app import create_app
from migration_guard.demo.pve_server import start_server
from migration_guard.service.refresher import InventoryRefresher
from migration_guard.store.drift import DRIFT_STREAM
from migration_guard.store.stream import EVENTS_STREAM
from migration_guard_bot.notifier import Notifier
from tests.fakes.clock import Clock
from tests.fakes.slack_api_server import SlackApiServer
from tests.service.test_service_integration import service_for
from tests.support.redis_server import clean_db, redis_url

pytestmark = pytest.mark.integration

REDIS_URL = redis_url(11)
TOKEN = "drift-token-0123456789abcdef0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BDW = "intel-broadwell-ep-xeon-e5-2680v4"  # Xeon E5-2680 v4 (TSX on), a real /proc/cpuinfo dump
SCENARIO = {
    "_provenance": "two Broadwell nodes (the shipped E5-2680 v4 dump) and a Cascade Lake one; written "
    "for the drift test",
    "cluster": "lab",
    "pve_version": "9.2.1",
    "token": {
        "user": "guard@pve",
        "name": "check",
        "value": "5e0f3c2a-0000-4000-8000-0000000000d1",
        "privileges": ["VM.Audit", "Sys.Audit", "VM.Migrate"],
    },
    "nodes": [
        {"name": "pve-bdw1", "cpu_ref": BDW, "qemu_version": "9.2.0"},
        {"name": "pve-bdw2", "cpu_ref": BDW, "qemu_version": "9.2.0"},
        {"name": "pve-csl", "cpu_ref": "intel-cascadelake-sp-gold-6230-notsx", "qemu_version": "9.2.0"},
    ],
    "vms": [
        {
            "vmid": 105,
            "node": "pve-bdw1",
            "name": "legacy-erp",
            "status": "running",
            "config": {"cpu": "Broadwell"},
            "running_machine": "pc-q35-9.2+pve0",
        },
        {
            "vmid": 102,
            "node": "pve-csl",
            "name": "web01",
            "status": "running",
            "config": {"cpu": "x86-64-v2-AES"},
            "running_machine": "pc-q35-9.2+pve0",
        },
    ],
}


@pytest.fixture
def redis11():
    with clean_db(REDIS_URL) as client:
        yield client


@pytest.fixture
def pve():
    server = start_server(json.loads(json.dumps(SCENARIO)))
    yield server
    server.stop()


def drift_entries(store) -> list[dict]:
    out = []
    for _id, fields in store.xrange(EVENTS_STREAM):
        event = json.loads(fields[b"event"] if b"event" in fields else fields["event"])
        if event.get("kind") == "drift":
            out.append(event)
    return out


def test_tsx_switched_off_blocks_the_broadwell_vm_and_the_bot_posts_it_once(pve, redis11):
    clock = Clock()
    service = service_for(pve, clock, redis_url=REDIS_URL, api_tokens=TOKEN)
    refresher = InventoryRefresher(service)
    half = refresher.node_ttl + 1  # node facts are read anew after half their lifetime

    async def rounds() -> list[list]:
        seen = []
        try:
            await refresher.round()  # first sight: every node's baseline
            seen.append(await service.drift.recent())
            clock.now += half
            await refresher.round()  # the same facts: no drift
            seen.append(await service.drift.recent())
            pve.put_node("pve-bdw2", without_flags=["hle", "rtm"])  # microcode update + reboot
            clock.now += half
            await refresher.round()
            clock.now += half
            await refresher.round()  # nothing new since: still one event
            seen.append(await service.drift.recent())
        finally:
            await service.close()
        return seen

    first, same, changed = asyncio.run(rounds())
    metrics = service.metrics.render().decode()
    reader = service_for(pve, redis_url=REDIS_URL, api_tokens=TOKEN)  # another process's view
    with TestClient(create_app(reader, (TOKEN,)), raise_server_exceptions=False) as http:
        listed = http.get("/v1/drift", headers=AUTH).json()
        assert http.get("/v1/drift", params={"node": "pve-csl"}, headers=AUTH).json()["events"] == []
        assert http.get("/v1/drift", headers={}).status_code == 401
    assert first == [] and same == []
    (event,) = changed
    assert (event["node"], event["vanished"], event["appeared"]) == ("pve-bdw2", ["hle", "rtm"], [])
    assert event["vms_now_blocked"] == [
        {
            "vmid": 105,
            "name": "legacy-erp",
            "cpu": "Broadwell",
            "direction": "to",
            "node": "pve-bdw1",
            "reason": "pve-bdw2 lacks hle, rtm needed by cpu Broadwell: QEMU refuses to start it there",
        }
    ]
    assert event["vms_now_movable"] == []
    assert listed == {"cluster": "lab", "events": [event]}
    assert 'migration_guard_drift_events_total{node="pve-bdw2"} 1.0' in metrics
    assert redis11.xlen(DRIFT_STREAM) == 1

    # the bot posts it once, naming the flags and the VM
    (published,) = drift_entries(redis11)
    assert published["id"] == event["id"]
    with SlackApiServer() as slack:
        client = WebClient(token="xoxb-test", base_url=slack.url, retry_handlers=[])
        bot = Notifier(redis11, client, "C0DRIFT", block_ms=100, backoff_base_s=0.05)
        bot.ensure_group()
        thread = threading.Thread(target=bot.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not slack.calls("chat.postMessage", ok_only=True):
            assert time.monotonic() < deadline, "the drift event was not posted"
            time.sleep(0.02)
        time.sleep(0.3)  # a second post would come now
        bot.stop()
        thread.join(5)
        posts = slack.calls("chat.postMessage")
    assert len(posts) == 1
    text = posts[0]["params"]["text"]
    assert "pve-bdw2" in text and "hle rtm" in text and "VM 105" in text and "Broadwell" in text
    assert "flags vanished" in text and "pve-bdw1 → pve-bdw2" in text


def test_a_reboot_with_the_same_facts_is_no_drift_and_an_update_of_qemu_is(pve, redis11):
    clock = Clock()
    service = service_for(pve, clock, redis_url=REDIS_URL, api_tokens=TOKEN)
    refresher = InventoryRefresher(service)
    half = refresher.node_ttl + 1

    async def rounds() -> tuple[list, list]:
        try:
            await refresher.round()
            pve.set_faults(node_offline=["pve-bdw2"])  # rebooting: no facts to compare
            clock.now += half
            await refresher.round()
            pve.set_faults()  # back with the same CPU
            clock.now += half
            await refresher.round()
            rebooted = await service.drift.recent()
            pve.put_node("pve-csl", qemu_version="10.1.0")  # pve-qemu-kvm updated
            clock.now += half
            await refresher.round()
            return rebooted, await service.drift.recent()
        finally:
            await service.close()

    rebooted, updated = asyncio.run(rounds())
    assert rebooted == []
    (event,) = updated
    assert event["node"] == "pve-csl" and event["appeared"] == [] and event["vanished"] == []
    # the QEMU version as the guard reads it: the newest machine version the node offers
    assert (event["qemu_before"], event["qemu_after"]) == ("9.2", "10.1")
    assert event["changed"] == {"qemu_version": ["9.2", "10.1"]}


def test_tsx_switched_back_on_makes_the_broadwell_vm_movable_there(pve, redis11):
    clock = Clock()
    service = service_for(pve, clock, redis_url=REDIS_URL, api_tokens=TOKEN)
    refresher = InventoryRefresher(service)

    async def rounds() -> list:
        try:
            await refresher.round()
            pve.put_node("pve-csl", with_flags=["hle", "rtm"])  # tsx=on on the kernel command line
            clock.now += refresher.node_ttl + 1
            await refresher.round()
            return await service.drift.recent()
        finally:
            await service.close()

    (event,) = asyncio.run(rounds())
    assert (event["node"], event["appeared"], event["vanished"]) == ("pve-csl", ["hle", "rtm"], [])
    assert event["vms_now_movable"] == [
        {"vmid": 105, "name": "legacy-erp", "cpu": "Broadwell", "direction": "to", "node": "pve-bdw1"}
    ]
    assert event["vms_now_blocked"] == []


def test_a_change_seen_while_redis_does_not_answer_is_reported_once_it_does(pve):
    """Redis paused (a network cut: its data stays): nothing is compared or stored, no event is
    lost; the first round after it answers again records the change once."""
    import redis as redis_sync

    from tests.support.e2e import free_port
    from tests.support.redis_server import start_redis

    port = free_port()
    proc = start_redis(port)
    admin = redis_sync.Redis(port=port, socket_timeout=5)
    clock = Clock()
    service = service_for(pve, clock, redis_url=f"redis://127.0.0.1:{port}/0", api_tokens=TOKEN)
    refresher = InventoryRefresher(service)

    async def rounds() -> tuple[list, list]:
        try:
            await refresher.round()  # baselines
            pve.put_node("pve-bdw2", without_flags=["hle", "rtm"])
            admin.execute_command("CLIENT", "PAUSE", 2500, "ALL")
            clock.now += refresher.node_ttl + 1
            await refresher.round()  # the new facts are read; Redis does not answer: not compared
            during = service.counter_value()
            await asyncio.sleep(3.0)  # the pause ends; the store tries again after its back-off
            await refresher.round()
            await refresher.round()
            return during, await service.drift.recent()
        finally:
            await service.close()

    service.counter_value = lambda: [  # type: ignore[attr-defined]
        s.value for m in service.drift.counter.collect() for s in m.samples if s.name.endswith("_total")
    ]
    try:
        during, events = asyncio.run(rounds())
    finally:
        proc.terminate()
        proc.wait(10)
    assert during == []  # no event while Redis was away
    (event,) = events  # and exactly one after it
    assert event["node"] == "pve-bdw2" and event["vanished"] == ["hle", "rtm"]
    assert [m["vmid"] for m in event["vms_now_blocked"]] == [105]
