"""Each node's Proxmox: the CPU types it accepts, the names it accepts, and rolling upgrades.

End to end: the service's HTTP API (uvicorn) reading, over proxmoxer, the Proxmox-shaped test server
serving a cluster in a rolling upgrade (``shared/migration_guard/data/scenarios/rolling_upgrade.json``: pve3
on
Proxmox VE 7.4, pve1 and pve2 on 8.4, pve4 on 9.2), and the bot's answers to the same service.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import ssl
import urllib.request

import httpx
import pytest

from migration_guard.api import app as api
from migration_guard.client import ServiceClient
from migration_guard.demo import pve_server as pve_testserver
from migration_guard.demo.pve_scenario import load_scenario
from migration_guard.engine import pve_versions
from migration_guard.service.guard import build_service
from migration_guard_bot.answers import answer
from migration_guard_bot.home import home_view
from migration_guard_bot.parser import parse
from tests.support.redis_server import clean_db, redis_url
from tests.support.service_stack import serving, settings_for

pytestmark = pytest.mark.integration

REDIS_URL = redis_url(13)
TOKEN = "pve-versions-token"
SCENARIO = load_scenario("rolling_upgrade")


def _settings(pve, **extra):
    return settings_for(pve, api_tokens=TOKEN, pve_cluster_name="rolling", pve_timeout=5, **extra)


@pytest.fixture(scope="module")
def stack():
    with clean_db(REDIS_URL):
        pve = pve_testserver.start_server(copy.deepcopy(SCENARIO))
        app = api.create_app(build_service(_settings(pve, redis_url=REDIS_URL)), [TOKEN])
        with serving(app) as base:
            http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20)
            bot = ServiceClient(base, TOKEN, timeout=20)
            yield http, bot, pve
            bot.close()
            http.close()
        pve.stop()


def _pve_get(pve, path: str):
    """GET an API path of the test server as Proxmox answers it: (status, body)."""
    t = pve.token
    req = urllib.request.Request(
        pve.url + "/api2/json" + path,
        headers={"Authorization": f"PVEAPIToken={t['user']}!{t['name']}={t['value']}"},
    )
    ctx = ssl.create_default_context(cafile=pve.ca_path)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _accepted(pve, node: str) -> set[str]:
    status, body = _pve_get(pve, f"/nodes/{node}/capabilities/qemu/cpu")
    assert status == 200, body
    return {m["name"] for m in body["data"]}


def _check(http, vmid: int, target: str) -> dict:
    r = http.get(f"/v1/vms/{vmid}/check", params={"target": target})
    assert r.status_code == 200, r.text
    return r.json()


def _codes(body: dict) -> list[str]:
    return [r["code"] for r in body["reasons"]]


def _type_names(text: str) -> list[str]:
    """CPU type names a suggestion offers: each "...: <type>" part and "<type> runs on"."""
    names = re.findall(r"(?:know|knows): ([A-Za-z0-9_.\-]+)", text or "")
    names += re.findall(r"^([A-Za-z0-9_.\-]+) runs on", text or "")
    return names


# --- the test server speaks each node's release ----------------------------------------------------


def test_each_node_answers_its_own_version_and_cpu_types(stack):
    _, _, pve = stack
    assert _pve_get(pve, "/nodes/pve3/version") == (
        200,
        {"data": {"version": "7.4-17", "release": "7.4", "repoid": "513c62be"}},
    )
    assert _pve_get(pve, "/nodes/pve4/version")[1]["data"]["release"] == "9.2"
    v74, v84, v92 = (_accepted(pve, n) for n in ("pve3", "pve1", "pve4"))
    # qemu-server 8.0.4 brought x86-64-v2..v4; 7.x and 8.x accept the legacy names only
    assert "x86-64-v2-AES" not in v74 and {"x86-64-v2-AES", "x86-64-v4"} <= v84
    assert "Broadwell-noTSX" in v74 and "Broadwell-noTSX" in v84
    assert "Broadwell-v2" not in v74 | v84 and "Broadwell-v2" in v92
    assert "custom-bdw-safe" in v74 and "custom-bdw-safe" in v92  # custom models are listed too
    rows = _pve_get(pve, "/nodes/pve4/capabilities/qemu/cpu")[1]["data"]
    assert {"name": "x86-64-v3", "custom": 0, "vendor": "default", "abstract": 1} in rows


def test_a_release_without_the_list_answers_501_like_proxmox():
    scenario = copy.deepcopy(SCENARIO)
    scenario["pve_releases"]["7.4"]["cpu_models"] = None
    with pve_testserver.start_server(scenario) as pve:
        status, body = _pve_get(pve, "/nodes/pve3/capabilities/qemu/cpu")
    assert status == 501
    assert body["message"].startswith("Method 'GET /nodes/pve3/capabilities/qemu/cpu' not implemented")


# --- the release data read from qemu-server ----------------------------------------------------------


def test_release_data_says_when_each_type_arrived():
    assert pve_versions.first_release_with("x86-64-v2-AES") == ("8.0.4", False)
    assert pve_versions.first_release_with("Broadwell-noTSX")[1] is False
    assert pve_versions.first_release_with("Broadwell-v2") == ("9.1.13", True)  # pve-qemu-kvm's list
    sure74, maybe74 = pve_versions.types_of_release("7.4-17")
    assert "x86-64-v2-AES" not in maybe74 and "Broadwell-noTSX-IBRS" in sure74
    sure84, _ = pve_versions.types_of_release("8.4.1")
    assert "x86-64-v2-AES" in sure84 and "Broadwell-v4" not in sure84


# --- verdicts -----------------------------------------------------------------------------------------


def test_a_type_the_targets_proxmox_does_not_define_is_denied_with_the_fix(stack):
    http, _, _ = stack
    body = _check(http, 201, "pve3")  # x86-64-v2-AES from 8.4 to 7.4
    assert body["verdict"] == "deny"
    assert "cpu-type-unknown-on-target" in _codes(body)
    why = next(r["message"] for r in body["reasons"] if r["code"] == "cpu-type-unknown-on-target")
    assert why.startswith("pve3 (Proxmox VE 7.4) does not define cpu type x86-64-v2-AES")
    assert body["suggestion"].startswith("upgrade pve-qemu-kvm/qemu-server on pve3 to 8.0.4 or later")
    assert "give the VM a type both know: Broadwell-noTSX-IBRS" in body["suggestion"]
    for name in _type_names(body["suggestion"]):
        assert name in _accepted(stack[2], "pve3") and name in _accepted(stack[2], "pve1")
    # the same VM toward a node that knows the type: allowed
    assert _check(http, 201, "pve2")["verdict"] == "allow"


def test_a_versioned_qemu_name_is_denied_on_pve8_and_the_legacy_name_offered(stack):
    http, _, _ = stack
    body = _check(http, 202, "pve1")  # Broadwell-v2 from 9.2 to 8.4
    assert body["verdict"] == "deny" and "cpu-type-unknown-on-target" in _codes(body)
    assert "give the VM the same model under the name both know: Broadwell-noTSX" in body["suggestion"]
    assert "9.1.13 or later" in body["suggestion"]


def test_the_hook_decision_carries_the_new_reason_code(stack):
    http, _, _ = stack
    r = http.post("/v1/decisions", json={"vmid": 201, "target": "pve3", "source": "pve1"})
    body = r.json()
    assert body["verdict"] == "deny" and body["code"] == "cpu-type-unknown-on-target" and body["exit"] == 4
    assert "does not define cpu type x86-64-v2-AES" in body["line"]


def test_newer_to_older_major_is_flagged_and_denied_where_it_fails(stack):
    http, _, _ = stack
    down_ok = _check(http, 206, "pve1")  # kvm64, machine 8.1, from 9.2 to 8.4: runs, but unsupported
    assert down_ok["verdict"] == "allow" and _codes(down_ok) == ["pve-downgrade"]
    notice = down_ok["reasons"][0]["message"]
    assert "Proxmox supports live migration only from older to newer releases" in notice
    down_bad = _check(http, 204, "pve1")  # machine pc-q35-10.1+pve0 on QEMU 9.2: fails
    assert down_bad["verdict"] == "deny"
    assert set(_codes(down_bad)) == {"pve-downgrade", "machine-unsupported"}
    up = _check(http, 203, "pve4")  # 7.4 to 9.2: the supported direction, no notice
    assert up["verdict"] == "allow" and "pve-downgrade" not in _codes(up)


# --- names Proxmox accepts ----------------------------------------------------------------------------


def test_targets_suggest_only_names_both_nodes_accept(stack):
    http, _, pve = stack
    body = http.get("/v1/vms/202/targets").json()
    assert {t["target"] for t in body["targets"]} == {"pve1", "pve2", "pve3"}
    for t in body["targets"]:
        assert t["verdict"] == "deny" and "cpu-type-unknown-on-target" in _codes(t)
        both = _accepted(pve, t["target"]) & _accepted(pve, "pve4")
        for name in _type_names(t["suggestion"]):
            assert name in both, (t["target"], t["suggestion"])


def test_recommendation_in_names_every_node_accepts(stack):
    http, _, pve = stack
    rec = http.get("/v1/cluster/recommendation").json()
    assert rec["recommended"] == "Broadwell-noTSX-IBRS"  # not Broadwell-v4: 7.4 and 8.4 lack that name
    everywhere = set.intersection(*(_accepted(pve, n) for n in ("pve1", "pve2", "pve3", "pve4")))
    assert rec["ranked"] and set(rec["ranked"]) <= everywhere
    risky = {v["vmid"]: v for v in rec["vms_at_risk"]}
    assert {"node": "pve3", "missing": [], "type_unknown": True} in risky[201]["cannot_run_on"]
    alone = http.get("/v1/cluster/recommendation", params={"nodes": "pve3"}).json()
    assert alone["recommended"] == "Cascadelake-Server-noTSX"
    assert "Cascadelake-Server-v5" in alone["reason"] and "pve3 (Proxmox VE 7.4)" in alone["reason"]


def test_cluster_view_shows_versions_and_the_rolling_upgrade(stack):
    http, _, _ = stack
    view = http.get("/v1/cluster").json()
    nodes = {n["name"]: n for n in view["nodes"]}
    assert (nodes["pve3"]["pve_version"], nodes["pve3"]["qemu_version"]) == ("7.4-17", "7.2")
    assert (nodes["pve4"]["pve_version"], nodes["pve4"]["qemu_version"]) == ("9.2.11", "10.1")
    assert nodes["pve1"]["best_cpu_type"] == "Broadwell-IBRS"  # Broadwell-v3 under 8.4's name
    assert nodes["pve3"]["best_cpu_type"] == "Cascadelake-Server-noTSX"
    assert "Cascadelake-Server-v5" in nodes["pve3"]["best_cpu_note"]
    assert view["rolling_upgrade"]["message"].startswith(
        "rolling upgrade in progress: pve3 on 7.4; pve1, pve2 on 8.4; pve4 on 9.2; "
        "move VMs toward the newer nodes"
    )


# --- the bot --------------------------------------------------------------------------------------------


def test_bot_says_no_with_the_fix(stack):
    a = answer(parse("can vm 201 move to pve3?"), stack[1])
    assert a.text.startswith(
        "NO: VM 201 (app-v2aes) cannot move to pve3 (CPU type x86-64-v2-AES), from pve1."
    )
    assert "pve3 (Proxmox VE 7.4) does not define cpu type x86-64-v2-AES" in a.text
    assert "Suggestion: upgrade pve-qemu-kvm/qemu-server on pve3 to 8.0.4 or later" in a.text
    assert "Proxmox supports live migration only from older to newer releases" in a.text


def test_bot_targets_say_why_each_older_node_refuses(stack):
    a = answer(parse("where can vm 202 go?"), stack[1])
    assert a.text.startswith("VM 202 (db-bdw2) on pve4: can move to 0 of 3 other nodes.")
    assert "pve1: no (pve1 (Proxmox VE 8.4) does not define cpu type Broadwell-v2" in a.text
    assert "pve3: no (pve3 (Proxmox VE 7.4) does not define cpu type Broadwell-v2" in a.text


def test_bot_recommends_a_name_every_node_accepts(stack):
    a = answer(parse("which cpu type should we use?"), stack[1])
    assert a.text.startswith("Recommended CPU type for pve1, pve2, pve3, pve4: Broadwell-noTSX-IBRS.")
    alone = answer(parse("recommend for pve3"), stack[1])
    assert alone.text.startswith("Recommended CPU type for pve3: Cascadelake-Server-noTSX.")
    assert "Cascadelake-Server-v5 would run, but only under that versioned name" in alone.text


def test_bot_home_shows_versions_and_the_rolling_upgrade(stack):
    flat = json.dumps(home_view(stack[1])["blocks"], ensure_ascii=False)
    assert "rolling upgrade in progress: pve3 on 7.4; pve1, pve2 on 8.4; pve4 on 9.2" in flat
    assert "PVE 7.4-17, QEMU 7.2" in flat and "PVE 9.2.11, QEMU 10.1" in flat
    assert "best type `Broadwell-IBRS`" in flat and "best type `Broadwell-v3`" not in flat


# --- where a node does not give its list: the release data ------------------------------------------


def test_without_the_nodes_list_the_release_data_decides():
    scenario = copy.deepcopy(SCENARIO)
    scenario["pve_releases"]["7.4"]["cpu_models"] = None  # pve3 answers 501
    with pve_testserver.start_server(scenario) as pve:
        service = build_service(_settings(pve))

        async def ask():
            try:
                return (await service.check(201, "pve3")).body
            finally:
                await service.close()

        body = asyncio.run(ask())
    assert body["verdict"] == "deny" and "cpu-type-unknown-on-target" in _codes(body)
    why = next(r["message"] for r in body["reasons"] if r["code"] == "cpu-type-unknown-on-target")
    assert "(the CPU types of that release's qemu-server)" in why


# --- pure rules -----------------------------------------------------------------------------------------


def _node(name: str, pve: str, types: tuple[str, ...] = (), source: str = ""):
    from migration_guard.engine.facts import NodeFacts

    return NodeFacts(
        cluster="c", name=name, online=True, pve_version=pve, cpu_types=types, cpu_types_source=source
    )


def test_namer_spells_a_model_as_every_node_accepts_it():
    pve8 = _node("a", "8.4.1", ("Broadwell-noTSX-IBRS", "kvm64"), "node")
    pve9 = _node("b", "9.2.11", ("Broadwell-noTSX-IBRS", "Broadwell-v4", "kvm64"), "node")
    names = pve_versions.Namer([pve8, pve9])
    assert names("Broadwell-v4") == "Broadwell-noTSX-IBRS"
    assert pve_versions.Namer([pve9])("Broadwell-v4") == "Broadwell-v4"
    assert names("Cascadelake-Server-v5") is None
    assert [a.node for a in names.lacking("Cascadelake-Server-v5")] == ["a", "b"]
    # nothing known about any node: names pass unchanged (no guess)
    assert pve_versions.Namer([_node("c", "")])("Broadwell-v4") == "Broadwell-v4"


def test_release_data_that_cannot_tell_does_not_deny():
    from migration_guard.engine.checks import evaluate
    from migration_guard.engine.facts import VmFacts

    # Proxmox VE 8.0 shipped qemu-server 8.0.3 (no x86-64-vN) and 8.0.4 (with): unsure, not denied
    pve80 = _node("old", "8.0.3")
    assert pve_versions.accepts_of(pve80).accepts("x86-64-v2-AES") is None
    vm = VmFacts(cluster="c", vmid=1, node="new", status="stopped", cpu="x86-64-v2-AES")
    verdict = evaluate(vm, _node("new", "8.4.1"), pve80)
    assert "cpu-type-unknown-on-target" not in [r.code for r in verdict.reasons]
    # Proxmox VE 7.4: no qemu-server 7.x knows it: denied even without the node's list
    verdict = evaluate(vm, _node("new", "8.4.1"), _node("old", "7.4-17"))
    assert verdict.verdict == "deny" and verdict.deny_code == "cpu-type-unknown-on-target"


def test_one_release_is_no_rolling_upgrade():
    assert pve_versions.rolling_upgrade([_node("a", "8.4.1"), _node("b", "8.4.2")]) is None
    mixed = pve_versions.rolling_upgrade([_node("a", "8.4.1"), _node("b", "8.4.1"), _node("c", "9.2.11")])
    assert mixed is not None and mixed["message"].startswith(
        "rolling upgrade in progress: a, b on 8.4; c on 9.2; move VMs toward the newer nodes"
    )
