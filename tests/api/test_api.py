"""The HTTP API over a fake cluster reader and fakeredis: verdict bodies, auth, every error path,
the hook's text/plain answer, events, decisions, cluster views, metrics, readiness."""

from __future__ import annotations

import json
import time

import fakeredis
import pytest
from fastapi.testclient import TestClient

from migration_guard.api.app import create_app
from migration_guard.errors import ProxmoxAuthError, ProxmoxUnreachable
from migration_guard.store.events import EVENTS_STREAM
from tests.fakes.service import AUTH, SCENARIO, TOKEN, FakeReader, make_service


@pytest.fixture
def reader():
    return FakeReader()


@pytest.fixture
def redis():
    return fakeredis.FakeAsyncRedis(decode_responses=True)


@pytest.fixture
def client(reader, redis):
    service = make_service(reader, redis)
    with TestClient(create_app(service, (TOKEN,)), raise_server_exceptions=False) as c:
        c.service = service
        yield c


def check(client, vmid, target, headers=AUTH):
    return client.get(f"/v1/vms/{vmid}/check", params={"target": target}, headers=headers)


# --- auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/vms/101/check?target=pve2",
        "/v1/vms/101/targets",
        "/v1/decisions",
        "/v1/cluster",
        "/v1/cluster/recommendation",
        "/v1/matrix",
    ],
)
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}]
)
def test_every_v1_path_needs_the_bearer_token(client, path, headers):
    answer = client.get(path, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"
    assert answer.headers["www-authenticate"] == "Bearer"


def test_health_ready_metrics_need_no_auth(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert "migration_guard_checks_total" in client.get("/metrics").text


# --- verdicts -------------------------------------------------------------------------------------


def test_deny_missing_flags_body(client):
    body = check(client, 101, "pve3").json()
    assert set(body) >= {
        "vmid",
        "name",
        "source",
        "target",
        "verdict",
        "reasons",
        "cpu",
        "suggestion",
        "checked_at",
        "facts_age_s",
        "flag_source",
        "source_cluster",
        "target_cluster",
    }
    assert (body["vmid"], body["name"], body["source"], body["target"]) == (101, "web01", "pve1", "pve3")
    assert body["verdict"] == "deny"
    codes = [r["code"] for r in body["reasons"]]
    assert "missing-flags" in codes
    assert "avx512f" in " ".join(r["message"] for r in body["reasons"])
    assert body["suggestion"] and body["suggestion"].endswith("runs on both pve1 and pve3")
    assert body["flag_source"] == "cpuinfo"
    assert body["source_cluster"] == body["target_cluster"] == "lab"


def test_allow(client):
    body = check(client, 101, "pve2").json()
    assert body["verdict"] == "allow", body


def test_target_offline(client):
    body = check(client, 101, "pve5").json()
    assert body["verdict"] == "deny"
    assert body["reasons"][0]["code"] == "target-offline"


def test_skip_tag_bypasses(client):
    body = check(client, 104, "pve3").json()
    assert body["verdict"] == "allow"
    assert [r["code"] for r in body["reasons"]] == ["bypassed"]


def test_local_resources_deny(client):
    body = check(client, 105, "pve2").json()
    assert body["verdict"] == "deny"
    assert {"local-resources", "storage-unavailable"} <= {r["code"] for r in body["reasons"]}


def test_machine_unsupported(client):
    body = check(client, 106, "pve3").json()
    assert body["verdict"] == "deny"
    assert "machine-unsupported" in [r["code"] for r in body["reasons"]]


def test_vendor_mismatch_for_host_cpu(client):
    body = check(client, 103, "pve4").json()
    assert body["verdict"] == "deny"
    assert body["reasons"][0]["code"] == "vendor-mismatch"


def test_precheck_skipped_is_not_a_deny(reader, client):
    reader.no_migrate = True
    body = check(client, 102, "pve2").json()
    assert body["verdict"] == "allow"
    assert "precheck-skipped" in [r["code"] for r in body["reasons"]]


def test_flags_unknown(reader, client):
    reader.drop_flags.add("pve3")
    body = check(client, 102, "pve3").json()
    assert body["verdict"] == "unknown"
    assert body["reasons"][0]["code"] == "flags-unknown"


def test_targets_lists_every_other_node(client):
    body = client.get("/v1/vms/101/targets", headers=AUTH).json()
    by_target = {t["target"]: t["verdict"] for t in body["targets"]}
    assert by_target == {"pve2": "allow", "pve3": "deny", "pve4": "deny", "pve5": "deny"}


# --- errors ---------------------------------------------------------------------------------------


def test_unknown_vm_404(client):
    answer = check(client, 999, "pve2")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "unknown-vm"
    assert "999" in answer.json()["error"]["message"]


def test_unknown_node_404(client):
    answer = check(client, 101, "pve9")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "unknown-node"
    assert "pve9" in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/vms/abc/check?target=pve2", "vmid"),
        ("/v1/vms/101/check", "target"),
        ("/v1/vms/101/check?target=bad%20name", "target"),
        ("/v1/decisions?limit=0", "limit"),
    ],
)
def test_malformed_input_422_names_the_field(client, path, field):
    answer = client.get(path, headers=AUTH)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "bad-input"
    assert error["message"].startswith(field)


def test_post_decision_malformed_422(client):
    answer = client.post("/v1/decisions", json={"vmid": "x", "target": "pve2"}, headers=AUTH)
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "vmid"
    answer = client.post("/v1/decisions", json={"vmid": 101, "target": "pve2", "mode": "maybe"}, headers=AUTH)
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "mode"
    answer = client.post(
        "/v1/decisions", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["message"].startswith("body: Invalid JSON"), answer.text


def test_no_remote_policy_path_is_left(client):
    """A remote migration never runs the target's hook, so the service has no "remote" decision and no
    remote_unknown policy: the request schema does not offer them and a caller still sending them (a
    hook of an earlier release) gets the same verdict as without them, never a policy veto."""
    schema = client.get("/openapi.json").json()
    offered = set(
        schema["paths"]["/v1/decisions"]["post"]["requestBody"]["content"]["application/json"]["schema"][
            "properties"
        ]
    )
    assert not offered & {"remote", "remote_unknown", "vmgenid"}, offered
    plain = client.post("/v1/decisions", json={"vmid": 103, "target": "pve2"}, headers=AUTH).json()
    old = client.post(
        "/v1/decisions",
        json={"vmid": 103, "target": "pve2", "remote": True, "remote_unknown": "deny"},
        headers=AUTH,
    ).json()
    assert (old["verdict"], old["code"], old["exit"]) == (plain["verdict"], plain["code"], plain["exit"])
    assert "remote_unknown" not in old["line"]
    recorded = client.get("/v1/decisions", params={"limit": 1}, headers=AUTH).json()["decisions"][0]
    assert recorded["id"] == old["decision_id"] and "policy" not in recorded and "remote" not in recorded


@pytest.mark.parametrize("body", [b"{not json", b'{"vmid": "x"}', b""])
def test_post_decision_without_a_valid_token_is_401_whatever_the_body(client, body):
    """The token is checked before the body is read: no parse error leaks to an unknown caller."""
    answer = client.post(
        "/v1/decisions",
        content=body,
        headers={"Authorization": "Bearer wrong", "Content-Type": "application/json"},
    )
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"


def test_same_node_is_bad_input(client):
    answer = check(client, 101, "pve1")
    assert answer.status_code == 422
    assert "already runs on pve1" in answer.json()["error"]["message"]


def test_unknown_path_is_json_404(client):
    answer = client.get("/v2/nothing", headers=AUTH)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not-found"


def test_cluster_unreachable_without_facts_is_unknown_503(reader, client):
    reader.error = ProxmoxUnreachable("cannot reach Proxmox at pve1:8006: connection refused")
    answer = check(client, 101, "pve2")
    assert answer.status_code == 503
    body = answer.json()
    assert body["verdict"] == "unknown"
    assert body["reasons"][0]["code"] == "cluster-unreachable"


def test_stale_facts_answer_with_their_age(reader, redis):
    service = make_service(reader, redis, cache_vm_ttl=0, cache_list_ttl=0, cache_node_ttl=0)
    with TestClient(create_app(service, (TOKEN,)), raise_server_exceptions=False) as c:
        assert check(c, 101, "pve3").json()["verdict"] == "deny"
        reader.error = ProxmoxUnreachable("cannot reach Proxmox at pve1:8006: timed out")
        time.sleep(0.05)
        answer = check(c, 101, "pve3")
        body = answer.json()
        assert answer.status_code == 200
        assert body["verdict"] == "deny"
        assert body["stale"] is True and body["facts_age_s"] >= 0.0
        assert "stale-facts" in [r["code"] for r in body["reasons"]]


def test_proxmox_auth_error_is_502_json(reader, client):
    reader.error = ProxmoxAuthError("Proxmox at pve1:8006 refused the API token guard@pve!check (401)")
    answer = check(client, 101, "pve2")
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "proxmox-auth"


def test_internal_error_is_json_500_without_traceback(reader, client):
    reader.error = RuntimeError("boom in a library")
    answer = check(client, 101, "pve2")
    assert answer.status_code == 500
    assert answer.json() == {"error": {"code": "internal", "message": answer.json()["error"]["message"]}}
    assert "Traceback" not in answer.text and "boom" not in answer.text


# --- decisions and events -------------------------------------------------------------------------


def test_decision_text_plain_for_the_hook(client, redis):
    answer = client.post(
        "/v1/decisions",
        json={"vmid": 101, "target": "pve3", "source": "pve1", "mode": "enforce"},
        headers={**AUTH, "Accept": "text/plain"},
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    lines = dict(line.split("=", 1) for line in answer.text.splitlines())
    assert list(lines) == ["verdict", "code", "exit", "decision", "line", "end"]
    assert answer.text.endswith("\nend=1\n")  # the hook acts only on an answer that arrived whole
    assert lines["verdict"] == "deny" and lines["code"] == "missing-flags" and lines["exit"] == "2"
    assert lines["line"].startswith("blocked migration of VM 101 (web01) from pve1 to pve3: pve3 lacks")
    assert lines["line"].endswith("runs on both pve1 and pve3")
    assert len(lines["decision"]) == 26


@pytest.mark.parametrize(
    ("vmid", "target", "verdict", "exit_code"),
    [
        (102, "pve2", "allow", "0"),
        (103, "pve4", "deny", "1"),
        (106, "pve3", "deny", "3"),
        (101, "pve5", "deny", "4"),
    ],
)
def test_decision_exit_codes(client, vmid, target, verdict, exit_code):
    answer = client.post(
        "/v1/decisions", json={"vmid": vmid, "target": target}, headers={**AUTH, "Accept": "text/plain"}
    )
    lines = dict(line.split("=", 1) for line in answer.text.splitlines())
    assert (lines["verdict"], lines["exit"]) == (verdict, exit_code)


def test_decision_unknown_gives_exit_5_and_503(reader, client):
    reader.error = ProxmoxUnreachable("cannot reach Proxmox at pve1:8006: connection refused")
    answer = client.post(
        "/v1/decisions", json={"vmid": 101, "target": "pve3"}, headers={**AUTH, "Accept": "text/plain"}
    )
    assert answer.status_code == 503
    lines = dict(line.split("=", 1) for line in answer.text.splitlines())
    assert (lines["verdict"], lines["exit"], lines["code"]) == ("unknown", "5", "cluster-unreachable")


def test_decision_errors_in_text_plain(client):
    answer = client.post(
        "/v1/decisions", json={"vmid": 999, "target": "pve3"}, headers={**AUTH, "Accept": "text/plain"}
    )
    assert answer.status_code == 404
    lines = dict(line.split("=", 1) for line in answer.text.splitlines())
    assert lines["verdict"] == "unknown" and lines["code"] == "unknown-vm" and "999" in lines["line"]


def test_deny_is_published_and_recorded(client, redis):
    body = client.post(
        "/v1/decisions",
        json={
            "vmid": 101,
            "target": "pve3",
            "mode": "warn",
            "smbios_uuid": "abc",
            "cpu": "x86-64-v4",
        },
        headers=AUTH,
    ).json()
    assert body["verdict"] == "deny" and body["decision_id"] and body["event_queued"] is False
    entries = client.portal.call(redis.xrange, EVENTS_STREAM)
    event = json.loads(entries[-1][1]["event"])
    assert set(event) == {
        "id",
        "time",
        "vmid",
        "name",
        "source",
        "target",
        "source_cluster",
        "target_cluster",
        "cpu",
        "verdict",
        "reasons",
        "suggestion",
        "enforced",
    }
    assert event["id"] == body["decision_id"] and event["enforced"] is False and event["name"] == "web01"
    client.post("/v1/decisions", json={"vmid": 102, "target": "pve2"}, headers=AUTH)
    assert len(client.portal.call(redis.xrange, EVENTS_STREAM)) == 1  # an allow is not an event
    decisions = client.get("/v1/decisions", params={"limit": 5}, headers=AUTH).json()["decisions"]
    assert [d["vmid"] for d in decisions] == [102, 101]
    assert decisions[1]["mode"] == "warn" and decisions[1]["smbios_uuid"] == "abc"
    only = client.get("/v1/decisions", params={"limit": 5, "vmid": 101}, headers=AUTH).json()["decisions"]
    assert [d["vmid"] for d in only] == [101]


# --- cluster views --------------------------------------------------------------------------------


def test_cluster(client):
    nodes = {n["name"]: n for n in client.get("/v1/cluster", headers=AUTH).json()["nodes"]}
    assert nodes["pve4"]["vendor"] == "amd" and nodes["pve1"]["vendor"] == "intel"
    assert nodes["pve5"]["online"] is False
    assert nodes["pve3"]["best_cpu_type"]
    assert nodes["pve3"]["qemu_version"] == "8.1.5"


def test_recommendation(client):
    body = client.get("/v1/cluster/recommendation", params={"nodes": "pve1,pve3"}, headers=AUTH).json()
    assert body["nodes"] == ["pve1", "pve3"]
    assert body["recommended"]
    risky = {v["vmid"] for v in body["vms_at_risk"]}
    assert 101 in risky and 102 not in risky
    assert client.get("/v1/cluster/recommendation", params={"nodes": "pve9"}, headers=AUTH).status_code == 404


def test_matrix(client):
    body = client.get("/v1/matrix", headers=AUTH).json()
    rows = {r["vmid"]: r for r in body["vms"]}
    assert rows[101]["targets"]["pve3"]["verdict"] == "deny"
    assert rows[101]["targets"]["pve2"]["verdict"] == "allow"
    assert "pve1" not in rows[101]["targets"]


def test_matrix_cells_equal_each_pairs_own_verdict():
    """VMs alike share matrix cells: every cell must still be what that VM's own check says
    (without Proxmox's precondition, which the matrix leaves out)."""
    scenario = json.loads(json.dumps(SCENARIO))
    node1_vm = scenario["vms"][0]
    twins = [  # same CPU and state as VM 101, other ids, names and tags; one stopped; one skipped
        dict(node1_vm, vmid=901, name="twin-a"),
        dict(node1_vm, vmid=902, name="twin-b", status="stopped"),
        dict(node1_vm, vmid=903, name="twin-c", tags="migration-guard-skip"),
    ]
    scenario["vms"].extend(twins)
    service = make_service(FakeReader(scenario))
    with TestClient(create_app(service, (TOKEN,))) as c:
        body = c.get("/v1/matrix", headers=AUTH).json()
        assert {r["vmid"] for r in body["vms"]} >= {901, 902, 903}
        compared = 0
        for row in body["vms"]:
            for target, cell in row["targets"].items():
                own = c.get(f"/v1/vms/{row['vmid']}/check", params={"target": target}, headers=AUTH).json()
                if any(r["code"] in ("local-resources", "storage-unavailable") for r in own["reasons"]):
                    continue  # the precondition's part: not in the matrix
                assert cell["verdict"] == own["verdict"], (row["vmid"], target, own)
                compared += 1
        assert compared > 20
    rows = {r["vmid"]: r["targets"] for r in body["vms"]}
    assert rows[901] == rows[101]
    assert rows[903]["pve3"]["verdict"] == "allow" and rows[101]["pve3"]["verdict"] == "deny"


def test_metrics_count_verdicts_and_proxmox_calls(client):
    check(client, 101, "pve3")
    check(client, 101, "pve3")
    text = client.get("/metrics").text
    assert 'migration_guard_checks_total{verdict="deny"} 2.0' in text
    assert "migration_guard_check_latency_seconds_bucket" in text
    assert 'migration_guard_cache_hits_total{kind="vm"' in text or "migration_guard_cache_hits_total" in text
    assert 'migration_guard_proxmox_calls_total{kind="vms"}' in text


def test_warm_check_touches_no_reader(reader, client):
    check(client, 101, "pve3")
    before = sum(reader.calls.values())
    for _ in range(20):
        assert check(client, 101, "pve3").json()["verdict"] == "deny"
    assert sum(reader.calls.values()) == before


def test_readyz_degraded_when_redis_down(reader):
    from tests.fakes.redis import FlakyRedis

    flaky = FlakyRedis()
    service = make_service(reader, flaky, readyz_cache_s=0)
    with TestClient(create_app(service, (TOKEN,)), raise_server_exceptions=False) as c:
        flaky.down = True
        body = c.get("/readyz", headers=AUTH).json()
        assert body["status"] == "degraded" and body["redis"] == "down"
        answer = c.post("/v1/decisions", json={"vmid": 101, "target": "pve3"}, headers=AUTH).json()
        assert answer["verdict"] == "deny" and answer["event_queued"] is True
        assert "event-queued" in [r["code"] for r in answer["reasons"]]
        flaky.down = False
        assert c.get("/readyz").json()["status"] == "ready"
        time.sleep(1.3)  # the flusher runs every second
        assert len(c.portal.call(flaky.inner.xrange, EVENTS_STREAM)) == 1


def test_readyz_503_when_proxmox_unreachable(reader, client):
    reader.error = ProxmoxUnreachable("cannot reach Proxmox at pve1:8006")
    answer = client.get("/readyz", headers=AUTH)
    assert answer.status_code == 503 and answer.json()["proxmox"] == "unreachable"


def test_warm_verdict_follows_a_changed_vm_after_its_ttl(reader, redis):
    service = make_service(reader, redis, cache_vm_ttl=0.2)
    with TestClient(create_app(service, (TOKEN,)), raise_server_exceptions=False) as c:
        assert check(c, 102, "pve3").json()["verdict"] == "allow"
        assert check(c, 102, "pve3").json()["verdict"] == "allow"  # warm
        vm = next(v for v in reader.scenario["vms"] if v["vmid"] == 102)
        vm["config"]["cpu"] = "x86-64-v4"
        time.sleep(0.3)
        body = check(c, 102, "pve3").json()
        assert body["verdict"] == "deny" and body["cpu"] == "x86-64-v4"
        assert body["stale"] is False and body["facts_age_s"] < 1
