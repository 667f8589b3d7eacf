"""Audited one-time overrides through the real API over HTTP: the service on the Proxmox-shaped test
server (the built-in demo cluster) and the test session's real Redis. A second person approves; the
next denied decision of that VM and target is allowed once; every state change is kept."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from migration_guard.api.app import create_app
from migration_guard.client import ServiceClient
from migration_guard.errors import ConflictError, InputError, NotFoundError
from migration_guard.service.guard import GuardService
from migration_guard.store.redis_store import Store, connect
from tests.fakes.clock import Clock
from tests.fakes.pve import pve_server, reader_for
from tests.support import service_stack as stack
from tests.support.redis_server import clean_db, redis_url

pytestmark = pytest.mark.integration

REDIS_URL = redis_url(10)
TOKEN = "override-token"
#: the demo's analytics01 (x86-64-v4) on the Cascade Lake node: the Broadwell node lacks AVX-512
VMID, SOURCE, TARGET = 104, "pve-xeon-csl", "pve-xeon-bdw"


@pytest.fixture(scope="module")
def pve():
    with pve_server("demo") as server:
        yield server


@contextmanager
def running(pve, clock: Clock) -> Iterator[tuple[ServiceClient, GuardService]]:
    with clean_db(REDIS_URL) as db:
        settings = stack.settings_for(
            pve, api_tokens=TOKEN, pve_cluster_name="demo", redis_url=REDIS_URL, pve_timeout=3
        )
        client, kind = connect(REDIS_URL)
        service = GuardService(settings, reader_for(pve), Store(client, kind), clock=clock)
        with stack.serving(create_app(service, (TOKEN,))) as url, ServiceClient(url, TOKEN) as api:
            api.db = db  # type: ignore[attr-defined]
            yield api, service


@pytest.fixture
def api(pve):
    with running(pve, Clock()) as (client, _):
        yield client


def decide(api: ServiceClient) -> dict:
    return api.decide(VMID, TARGET, SOURCE)


def test_an_approved_override_allows_exactly_the_next_denied_decision(api):
    assert decide(api)["verdict"] == "deny"  # the guard's own verdict
    asked = api.request_override(VMID, TARGET, "guest never uses AVX-512", 900, "alice")
    assert asked["status"] == "pending" and asked["approved_by"] is None
    assert decide(api)["verdict"] == "deny"  # pending: changes nothing
    approved = api.approve_override(asked["id"], "bob")
    assert approved["status"] == "approved" and approved["approved_by"] == "bob"
    # a check mentions nothing and changes nothing: only a decision spends it
    assert api.check(VMID, TARGET)["verdict"] == "deny"

    allowed = decide(api)
    assert allowed["verdict"] == "allow" and allowed["exit"] == 0 and allowed["code"] == "override"
    assert allowed["override"] == {
        "id": asked["id"],
        "requested_by": "alice",
        "approved_by": "bob",
        "reason": "guest never uses AVX-512",
    }
    assert allowed["line"].startswith(f"allowed once by override {asked['id']} (requested by alice")
    assert "blocked migration of VM 104" in allowed["line"]  # what the guard said stays visible
    assert decide(api)["verdict"] == "deny"  # spent: the next one is the guard's again

    record = next(d for d in api.decisions(10, VMID) if d["id"] == allowed["decision_id"])
    assert record["verdict"] == "allow" and record["override"]["approved_by"] == "bob"
    [listed] = api.overrides()
    assert listed["status"] == "spent" and listed["decision_id"] == allowed["decision_id"]
    assert [h["status"] for h in listed["history"]] == ["pending", "approved", "spent"]
    assert [h["by"] for h in listed["history"]][:2] == ["alice", "bob"]


def test_the_requester_cannot_approve_their_own_override(api):
    asked = api.request_override(VMID, TARGET, "known guest", 900, "alice")
    with pytest.raises(ConflictError) as refused:
        api.approve_override(asked["id"], " Alice ")
    assert refused.value.code == "override-self-approval"
    assert "a second person must approve it" in str(refused.value)
    assert api.overrides()[0]["status"] == "pending"
    assert decide(api)["verdict"] == "deny"


def test_a_spent_or_approved_override_cannot_be_approved_again(api):
    asked = api.request_override(VMID, TARGET, "known guest", 900, "alice")
    api.approve_override(asked["id"], "bob")
    with pytest.raises(ConflictError) as again:
        api.approve_override(asked["id"], "carol")
    assert again.value.code == "override-approved"
    decide(api)
    with pytest.raises(ConflictError) as spent:
        api.approve_override(asked["id"], "carol")
    assert spent.value.code == "override-spent" and "already spent" in str(spent.value)


def test_an_expired_override_allows_nothing_and_says_so(pve):
    clock = Clock()
    with running(pve, clock) as (api, _):
        late = api.request_override(VMID, TARGET, "known guest", 60, "alice")
        early = api.request_override(VMID, "pve-atom1", "known guest", 60, "alice")
        api.approve_override(early["id"], "bob")
        clock.now += 61
        with pytest.raises(ConflictError) as refused:
            api.approve_override(late["id"], "bob")
        assert refused.value.code == "override-expired" and "ask for a new one" in str(refused.value)
        assert api.decide(VMID, "pve-atom1", SOURCE)["verdict"] == "deny"  # approved, but expired
        statuses = {o["id"]: o for o in api.overrides()}
        assert statuses[late["id"]]["status"] == statuses[early["id"]]["status"] == "expired"
        assert statuses[early["id"]]["history"][-1]["status"] == "expired"


def test_two_concurrent_decisions_spend_an_override_once(api):
    asked = api.request_override(VMID, TARGET, "known guest", 900, "alice")
    api.approve_override(asked["id"], "bob")
    verdicts: list[str] = []
    start = threading.Barrier(8)

    def one() -> None:
        with ServiceClient(api.url, TOKEN) as own:
            start.wait()
            verdicts.append(own.decide(VMID, TARGET, SOURCE)["verdict"])

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(verdicts) == ["allow"] + ["deny"] * 7
    assert api.overrides()[0]["status"] == "spent"


def test_bad_requests_are_refused_with_a_clear_message(api):
    with pytest.raises(NotFoundError) as no_node:
        api.request_override(VMID, "pve-nowhere", "x", 900, "alice")
    assert "has no target node by that name; its nodes are pve-atom1, " in str(no_node.value)
    with pytest.raises(NotFoundError):
        api.request_override(999, TARGET, "x", 900, "alice")
    with pytest.raises(InputError) as already:
        api.request_override(VMID, SOURCE, "x", 900, "alice")
    assert "already runs on" in str(already.value)
    for ttl, who, reason in ((5, "alice", "x"), (900, "", "x"), (900, "alice", "   ")):
        with pytest.raises(InputError):
            api.request_override(VMID, TARGET, reason, ttl, who)
    with pytest.raises(InputError):
        api.approve_override("../decisions", "bob")
    with pytest.raises(NotFoundError) as unknown:
        api.approve_override("01J0000000000000000000000Z", "bob")
    assert unknown.value.code == "unknown-override"
    assert api.overrides() == []


def test_overrides_need_the_token(api):
    import httpx

    answer = httpx.post(f"{api.url}/v1/overrides", content=b"not json")
    assert answer.status_code == 401
    assert httpx.get(f"{api.url}/v1/overrides").status_code == 401
