"""InventoryRefresher against the Proxmox-shaped HTTPS test server (proxmoxer, real Redis DB 7):
what one round reads, what it renews and when, how it reports an outage, and that the app's
lifespan runs it (``create_app(..., refresh=True)``) without any API request."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest
from fastapi.testclient import TestClient

from migration_guard.api.app import create_app
from migration_guard.demo.pve_server import start_server
from migration_guard.service.refresher import InventoryRefresher
from tests.fakes.clock import Clock
from tests.service.test_service_integration import SCENARIO, TOKEN, service_for
from tests.support.redis_server import clean_db, redis_url

pytestmark = pytest.mark.integration

REDIS_URL = redis_url(7)
LOGGER = "migration_guard.refresher"

ONLINE = ("pve1", "pve2", "pve3", "pve4")  # pve5 is offline in the scenario
LISTS = {"/nodes", "/cluster/resources"}
NODE_PATHS = {
    p
    for n in ONLINE
    for p in (
        f"/nodes/{n}/status",
        f"/nodes/{n}/capabilities/qemu/machines",
        f"/nodes/{n}/version",
        f"/nodes/{n}/capabilities/qemu/cpu",
    )
}
INVENTORY = LISTS | {"/cluster/qemu/cpu-flags"} | NODE_PATHS


@pytest.fixture
def redis7():
    with clean_db(REDIS_URL) as client:
        yield client


@pytest.fixture(scope="module")
def pve_server():
    server = start_server(SCENARIO)
    yield server
    server.stop()


@pytest.fixture
def pve(pve_server):
    pve_server.set_faults()
    pve_server.reset_counts()
    yield pve_server
    pve_server.set_faults()


def vm_paths(paths) -> list[str]:
    """Requests for VMs: a node's VM list or one VM's config, status or precondition."""
    return [p for p in paths if re.match(r"^/nodes/[^/]+/qemu(/|$)", p)]


def refresher_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


# --- what a round reads ---------------------------------------------------------------------------


def test_one_round_reads_lists_flags_and_every_online_node_then_nothing(pve, redis7):
    clock = Clock()
    service = service_for(pve, clock)
    refresher = InventoryRefresher(service)

    async def rounds():
        try:
            await refresher.round()
            first = pve.requests()
            pve.reset_counts()
            clock.now += 1.0
            await refresher.round()
            return first, pve.requests()
        finally:
            await service.close()

    first, second = asyncio.run(rounds())
    assert set(first) == INVENTORY, first
    assert all(n == 1 for n in first.values()), first
    assert vm_paths(first) == []  # no VM's own facts: checks read those
    assert second == {}
    assert refresher.rounds == 2 and refresher.failing is None


def test_after_half_the_list_lifetime_only_the_lists_are_renewed(pve, redis7):
    clock = Clock()
    service = service_for(pve, clock)  # lists live 10 s, node facts 300 s
    refresher = InventoryRefresher(service)
    assert (refresher.list_ttl, refresher.node_ttl) == (5.0, 150.0)

    async def rounds():
        try:
            await refresher.round()
            pve.reset_counts()
            clock.now += 4.9
            await refresher.round()
            before_half = pve.requests()
            clock.now += 0.2  # 5.1 s: older than half the list lifetime
            await refresher.round()
            lists = pve.requests()
            pve.reset_counts()
            clock.now += 150.0  # older than half the node facts lifetime too
            await refresher.round()
            return before_half, lists, pve.requests()
        finally:
            await service.close()

    before_half, lists, everything = asyncio.run(rounds())
    assert before_half == {}
    assert lists == {"/nodes": 1, "/cluster/resources": 1}
    assert set(everything) == INVENTORY and all(n == 1 for n in everything.values()), everything


def test_a_refreshed_inventory_spares_a_check_the_list_and_node_reads(pve, redis7):
    service = service_for(pve)

    async def go():
        try:
            await InventoryRefresher(service).round()
            pve.reset_counts()
            outcome = await service.check(102, "pve3")  # no source: found in the refreshed list
            return outcome, pve.requests()
        finally:
            await service.close()

    outcome, requests = asyncio.run(go())
    assert (outcome.body["source"], outcome.body["verdict"]) == ("pve1", "allow")
    assert set(requests) == {
        "/nodes/pve1/qemu/102/pending",
        "/nodes/pve1/qemu/102/status/current",
        "/nodes/pve1/qemu/102/migrate",
    }, requests


# --- outages ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", [{"status": 500}, {"status": 503}, {"reject_token": True}], ids=["500", "503", "token"]
)
def test_proxmox_down_logs_once_and_recovery_logs_once(pve, redis7, caplog, fault):
    clock = Clock()
    service = service_for(pve, clock)
    refresher = InventoryRefresher(service)
    caplog.set_level(logging.INFO, logger=LOGGER)
    pve.set_faults(**fault)

    async def rounds():
        try:
            await refresher.round()  # raises nothing
            down = list(refresher_records(caplog))
            for _ in range(3):
                clock.now += 6.0
                await refresher.round()
            still_down = list(refresher_records(caplog))
            failing = refresher.failing
            pve.set_faults()
            clock.now += 6.0
            await refresher.round()
            back = list(refresher_records(caplog))
            clock.now += 1.0
            await refresher.round()
            return down, still_down, failing, back, list(refresher_records(caplog))
        finally:
            await service.close()

    down, still_down, failing, back, after = asyncio.run(rounds())
    assert len(down) == 1 and down[0].levelno == logging.WARNING, down
    message = down[0].getMessage()
    assert "cluster lab" in message and pve.host_port in message
    assert still_down == down  # the failing rounds after the first log nothing new
    assert failing and pve.host_port in failing
    assert len(back) == 2 and back[1].levelno == logging.INFO
    assert back[1].getMessage() == "cluster lab answers again: its nodes and VM list are fresh"
    assert after == back
    assert refresher.failing is None and refresher.rounds == 6


def test_one_node_failing_is_an_outage_of_the_round(pve, redis7, caplog):
    service = service_for(pve)
    refresher = InventoryRefresher(service)
    caplog.set_level(logging.INFO, logger=LOGGER)
    pve.set_faults(status=500, paths=["/nodes/pve3/"])

    async def go():
        try:
            await refresher.round()
        finally:
            await service.close()

    asyncio.run(go())
    records = refresher_records(caplog)
    assert [r.levelno for r in records] == [logging.WARNING]
    assert "node pve3" in refresher.failing and "500" in refresher.failing
    assert "pve3" in records[0].getMessage()


def test_an_outage_after_a_good_round_is_logged_once(pve, redis7, caplog):
    clock = Clock()
    service = service_for(pve, clock)
    refresher = InventoryRefresher(service)
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def rounds():
        try:
            await refresher.round()
            pve.set_faults(status=500)
            for _ in range(3):
                clock.now += 6.0
                await refresher.round()
            down = list(refresher_records(caplog))
            pve.set_faults()
            clock.now += 6.0
            await refresher.round()
            return down, list(refresher_records(caplog))
        finally:
            await asyncio.sleep(0.3)  # background refreshes the stale answers started
            await service.close()

    down, back = asyncio.run(rounds())
    assert [r.levelno for r in down] == [logging.WARNING]
    assert [r.levelno for r in back] == [logging.WARNING, logging.INFO]


# --- the app's lifespan -------------------------------------------------------------------------------


def _wait_for(server, paths: set[str], within: float = 5.0) -> dict[str, int]:
    deadline = time.monotonic() + within
    seen = server.requests()
    while time.monotonic() < deadline and not paths <= set(seen):
        time.sleep(0.05)
        seen = server.requests()
    return seen


def test_the_lifespan_reads_the_inventory_without_any_request(pve, redis7):
    service = service_for(pve)
    app = create_app(service, (TOKEN,), refresh=True)
    with TestClient(app):
        seen = _wait_for(pve, INVENTORY)
    assert set(seen) >= INVENTORY, seen
    assert vm_paths(seen) == [], seen


def test_the_service_reads_its_inventory_before_it_listens(pve, redis7, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    service = service_for(pve)
    app = create_app(service, (TOKEN,), refresh=True)
    with TestClient(app):
        # no waiting: start-up itself read it, so the first check asks only for its VM
        assert set(pve.requests()) >= INVENTORY, pve.requests()
        assert service.cache.peek("vms") is not None and service.cache.peek("nodes") is not None
        (line,) = [r.getMessage() for r in refresher_records(caplog)]
        assert re.fullmatch(r"cluster lab: 5 nodes and \d+ VMs read in \d+ ms", line), line


def test_start_up_does_not_wait_longer_than_the_proxmox_timeout(pve, redis7, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    pve.set_faults(hang=True)
    service = service_for(pve, pve_timeout=1)
    app = create_app(service, (TOKEN,), refresh=True)
    started = time.monotonic()
    try:
        with TestClient(app) as c:
            took = time.monotonic() - started
            assert c.get("/healthz").status_code == 200  # it serves, without its inventory
    finally:
        pve.set_faults()
    assert took < 4.0, took
    messages = [r.getMessage() for r in refresher_records(caplog)]
    assert any("did not answer" in m or "cannot refresh cluster lab" in m for m in messages), messages


def test_without_refresh_the_lifespan_reads_nothing(pve, redis7):
    service = service_for(pve)
    app = create_app(service, (TOKEN,), refresh=False)
    with TestClient(app):
        time.sleep(0.5)
        assert pve.requests() == {}


@pytest.mark.parametrize("ttl", ["cache_list_ttl", "cache_node_ttl"])
def test_the_refresher_is_off_when_caching_is_off(pve, redis7, ttl):
    service = service_for(pve, **{ttl: 0})
    refresher = InventoryRefresher(service)
    assert refresher.enabled is False

    async def run():
        try:
            await asyncio.wait_for(refresher.run(), 1.0)  # returns at once
        finally:
            await service.close()

    asyncio.run(run())
    assert refresher.rounds == 0 and pve.requests() == {}
    app = create_app(service_for(pve, **{ttl: 0}), (TOKEN,), refresh=True)
    with TestClient(app):
        time.sleep(0.5)
        assert pve.requests() == {}
