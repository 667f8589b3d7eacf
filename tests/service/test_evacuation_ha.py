"""The evacuation pre-flight and HA recovery risks through the real API over HTTP: the service on the
Proxmox-shaped test server (the demo cluster: pve-epyc1's two VMs run on no Intel node; HA rule
db-pinned keeps db01 on pve-xeon-csl or pve-atom1, which cannot run its x86-64-v3) and real Redis."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from migration_guard.api.app import create_app
from migration_guard.client import ServiceClient
from migration_guard.demo.pve_scenario import load_scenario
from migration_guard.demo.pve_server import RunningServer
from migration_guard.errors import NotFoundError, ServiceError
from migration_guard.service.guard import GuardService
from migration_guard.store.redis_store import Store, connect
from tests.fakes.pve import pve_server, reader_for
from tests.support import service_stack as stack
from tests.support.redis_server import clean_db, redis_url

pytestmark = pytest.mark.integration

REDIS_URL = redis_url(11)
TOKEN = "evacuation-token"


@contextmanager
def service_on(pve: RunningServer) -> Iterator[ServiceClient]:
    with clean_db(REDIS_URL):
        settings = stack.settings_for(
            pve, api_tokens=TOKEN, pve_cluster_name="demo", redis_url=REDIS_URL, pve_timeout=3
        )
        client, kind = connect(REDIS_URL)
        service = GuardService(settings, reader_for(pve), Store(client, kind))
        with stack.serving(create_app(service, (TOKEN,))) as url, ServiceClient(url, TOKEN) as api:
            yield api


@pytest.fixture(scope="module")
def demo():
    with pve_server("demo") as pve, service_on(pve) as api:
        yield pve, api


def demo_with(**changes) -> dict:
    scenario = copy.deepcopy(load_scenario("demo"))
    scenario.update(changes)
    return scenario


def by_vmid(rows: list[dict]) -> dict[int, dict]:
    return {r["vmid"]: r for r in rows}


# --- evacuation ---------------------------------------------------------------------------------


def test_two_vms_with_nowhere_to_go_come_first_with_why_and_fix(demo):
    pve, api = demo
    body = api.evacuation("pve-epyc1")
    assert body["summary"] == {"vms": 2, "movable": 0, "stuck": 2, "unknown": 0, "ha_managed": 0}
    stuck = by_vmid(body["stuck"])
    assert list(stuck) == [101, 106]
    assert stuck[101]["why"] == (
        "no other node can take it (pve-xeon-bdw, pve-xeon-csl, pve-atom1: vendor-mismatch): CPU vendor "
        "mismatch: cpu host passes the source's AMD CPU through; pve-xeon-bdw is Intel: the guest would "
        "crash after cutover"
    )
    assert "\n" not in stuck[101]["why"]
    for vm in body["vms"]:  # every node judged, every one denies
        assert [t["node"] for t in vm["targets"]] == ["pve-xeon-bdw", "pve-xeon-csl", "pve-atom1"]
        assert {t["verdict"] for t in vm["targets"]} == {"deny"} and vm["allowed_targets"] == []


def test_each_target_has_the_verdict_check_gives(demo):
    _, api = demo
    for node in ("pve-epyc1", "pve-xeon-csl", "pve-xeon-bdw", "pve-atom1"):
        for vm in api.evacuation(node)["vms"]:
            for target in vm["targets"]:
                checked = api.check(vm["vmid"], target["node"])
                assert target["verdict"] == checked["verdict"], (vm["vmid"], target)
                assert target["reasons"] == [r["code"] for r in checked["reasons"]]


def test_an_ha_vm_is_judged_only_against_the_nodes_its_rule_allows(demo):
    _, api = demo
    body = api.evacuation("pve-xeon-csl")
    assert body["summary"] == {"vms": 3, "movable": 1, "stuck": 2, "unknown": 0, "ha_managed": 2}
    assert body["ha_source"] == "rules"
    vms = by_vmid(body["vms"])
    db01 = vms[103]
    assert db01["ha"] == {
        "managed": True,
        "group_or_rule": "db-pinned",
        "strict": True,
        "state": "started",
        "allowed_nodes": ["pve-atom1"],
    }
    # pve-epyc1 and pve-xeon-bdw run x86-64-v3, but HA would not send db01 there
    assert [t["node"] for t in db01["targets"]] == ["pve-atom1"]
    assert db01["targets"][0]["verdict"] == "deny" and db01["targets"][0]["reasons"] == ["missing-flags"]
    assert api.check(103, "pve-xeon-bdw")["verdict"] == "allow"
    stuck = by_vmid(body["stuck"])
    assert list(stuck) == [103, 104]
    assert stuck[103]["why"].startswith(
        "HA (db-pinned) may only move it to pve-atom1 (pve-atom1: missing-flags): pve-atom1 lacks abm, avx, "
    )
    assert vms[102]["ha"]["group_or_rule"] is None and vms[102]["allowed_targets"] == [
        "pve-epyc1",
        "pve-xeon-bdw",
        "pve-atom1",
    ]


def test_the_fix_runs_on_the_source_and_where_it_says():
    with pve_server("demo") as pve, service_on(pve) as api:
        stuck = by_vmid(api.evacuation("pve-xeon-csl")["stuck"])
        for vmid in (103, 104):
            fix, nodes = stuck[vmid]["fix"], stuck[vmid]["fix_nodes"]
            assert fix and nodes and stuck[vmid]["fix_why"].startswith(f"set cpu: {fix} ")
            vm = next(v for v in pve.scenario["vms"] if v["vmid"] == vmid)
            pve.put_vm({**vm, "config": {**vm["config"], "cpu": fix}})
        with service_on(pve) as fresh:  # new facts: the VMs now carry the fix
            after = fresh.evacuation("pve-xeon-csl")
            assert {s["vmid"] for s in after["stuck"]} == set()
            for vmid in (103, 104):
                assert set(by_vmid(after["vms"])[vmid]["allowed_targets"]) >= set(
                    stuck[vmid]["fix_nodes"][:1]
                )


def test_an_unknown_node_is_404_and_a_bad_name_refused(demo):
    _, api = demo
    with pytest.raises(NotFoundError) as missing:
        api.evacuation("pve-nowhere")
    assert "has no node by that name; its nodes are pve-atom1, " in str(missing.value)
    answer = httpx.get(
        f"{api.url}/v1/nodes/bad_name!/evacuation", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code in (404, 422)
    assert httpx.get(f"{api.url}/v1/nodes/pve-epyc1/evacuation").status_code == 401


# --- HA recovery risks --------------------------------------------------------------------------


def test_ha_risks_name_the_vm_and_the_node_that_cannot_run_it(demo):
    _, api = demo
    body = api.ha_risks()
    assert body["source"] == "rules" and body["ha_vms"] == 2
    [risk] = body["risks"]
    assert (risk["vmid"], risk["node"], risk["rule_or_group"], risk["ha_state"]) == (
        103,
        "pve-xeon-csl",
        "db-pinned",
        "started",
    )
    [node] = risk["nodes"]
    assert (node["node"], node["verdict"], node["reason"], node["fallback"]) == (
        "pve-atom1",
        "deny",
        "missing-flags",
        False,
    )
    assert "avx2" in node["message"]
    metrics = httpx.get(f"{api.url}/metrics").text
    assert "migration_guard_ha_risks 1.0" in metrics


GROUPS = {
    "resources": [
        {"sid": "vm:102", "state": "started"},
        {"sid": "vm:103", "state": "started", "group": "db"},
        {"sid": "vm:104", "state": "stopped"},  # HA does not start it again: no risk
    ],
    "groups": [{"group": "db", "nodes": "pve-atom1:1,pve-xeon-csl:2", "restricted": 1}],
}


def test_metrics_count_the_ha_risks_without_anyone_asking_first():
    """A scrape renews the HA risks (at most every few minutes, waiting 2 s at most), so the gauge
    does not depend on the bot polling GET /v1/ha/risks (it was absent until someone asked)."""
    with pve_server("demo") as pve, service_on(pve) as api:
        metrics = httpx.get(f"{api.url}/metrics").text
    assert "migration_guard_ha_risks 1.0" in metrics, metrics[-2000:]


def test_before_proxmox_9_the_groups_are_read_instead_of_the_rules():
    # /cluster/ha/rules answers 501 on Proxmox VE 8: the service falls back to /cluster/ha/groups
    with pve_server(demo_with(pve_version="8.4.1", ha=GROUPS)) as pve, service_on(pve) as api:
        body = api.ha_risks()
        assert body["source"] == "groups"
        assert [(r["vmid"], r["rule_or_group"], [n["node"] for n in r["nodes"]]) for r in body["risks"]] == [
            (103, "db", ["pve-atom1"])
        ]
        assert pve.requests().get("/cluster/ha/rules") and pve.requests().get("/cluster/ha/groups")
        db01 = by_vmid(api.evacuation("pve-xeon-csl")["vms"])[103]
        assert db01["ha"]["group_or_rule"] == "db" and db01["ha"]["allowed_nodes"] == ["pve-atom1"]


def test_on_proxmox_9_groups_not_yet_migrated_come_as_rules():
    with pve_server(demo_with(ha=GROUPS)) as pve, service_on(pve) as api:
        body = api.ha_risks()
        assert body["source"] == "rules"
        assert [r["rule_or_group"] for r in body["risks"]] == ["ha-group-db"]
        assert not pve.requests().get("/cluster/ha/groups")


def test_a_non_strict_rule_may_fall_back_to_any_node():
    ha = {
        "resources": [{"sid": "vm:102", "state": "started"}],
        "rules": [{"rule": "web", "type": "node-affinity", "resources": "vm:102", "nodes": "pve-xeon-csl"}],
    }
    scenario = demo_with(ha=ha)
    web01 = next(v for v in scenario["vms"] if v["vmid"] == 102)
    web01["config"]["cpu"] = "x86-64-v3"  # pve-atom1 (no AVX) cannot run it
    with pve_server(scenario) as pve, service_on(pve) as api:
        [risk] = api.ha_risks()["risks"]
        [node] = risk["nodes"]
        assert node["node"] == "pve-atom1" and node["fallback"] is True
        assert node["message"].endswith("(HA uses pve-atom1 only when none of the rule's nodes is online)")


def test_a_bad_ha_answer_gives_unknown_never_allow():
    with pve_server("demo") as pve, service_on(pve) as api:
        assert len(api.ha_risks()["risks"]) == 1
        pve.set_faults(bad_answer="html", paths=("/cluster/ha/rules",))
        with pytest.raises(ServiceError) as failed:  # an error, never an empty list of risks
            api.ha_risks()
        assert failed.value.code == "proxmox-bad-answer"
        assert "migration_guard_ha_risks 1.0" in httpx.get(f"{api.url}/metrics").text  # the last known
        body = api.evacuation("pve-xeon-csl")
        assert body["ha_source"] == "unknown" and "HA rules" in body["ha_error"]
        web01 = by_vmid(body["vms"])[102]  # every node runs it, but HA might send it elsewhere
        assert {t["verdict"] for t in web01["targets"]} == {"unknown"}
        assert all("ha-unknown" in t["reasons"] for t in web01["targets"])
        assert web01["allowed_targets"] == []
        assert body["summary"]["movable"] == 0 and body["summary"]["unknown"] == 2  # web01, db01
        assert {s["vmid"] for s in body["stuck"]} == {104}  # every node denies it whatever HA says


def test_a_strict_rule_with_no_other_node_leaves_the_vm_stuck_without_a_cpu_fix():
    ha = {
        "resources": [{"sid": "vm:102", "state": "started"}],
        "rules": [
            {
                "rule": "only-here",
                "type": "node-affinity",
                "resources": "vm:102",
                "nodes": "pve-xeon-csl",
                "strict": 1,
            }
        ],
    }
    with pve_server(demo_with(ha=ha)) as pve, service_on(pve) as api:
        body = api.evacuation("pve-xeon-csl")
        web01 = by_vmid(body["stuck"])[102]
        assert web01["why"] == "HA rule only-here allows no online node but this one: HA would stop VM 102"
        assert web01["fix"] is None and web01["fix_why"].startswith("HA may move it to no other node")
        assert by_vmid(body["vms"])[102]["targets"] == []
