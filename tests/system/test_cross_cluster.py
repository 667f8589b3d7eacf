"""Cross-cluster verdicts for real: one service (uvicorn, real Redis DB 6) reading two
Proxmox-shaped clusters over HTTPS, an AMD one (the default, single-cluster settings) and an
Intel one (MIGRATION_GUARD_CLUSTERS_FILE); asked through the API, the CLI client, the bot's client
and parser, and the real hookscript on the target of a remote migration."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from migration_guard.api import app as api
from migration_guard.demo import pve_server as pve_testserver
from migration_guard.service import guard as service_mod
from migration_guard.service import settings as settings_mod
from tests.support.redis_server import redis_url
from tests.support.service_stack import flushed_redis, serving, settings_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "service" / "scenario.json").read_text())
HOOK = ROOT / "hookscript" / "migration-guard-hook"
REDIS_URL = redis_url(6)
TOKEN = "cross-cluster-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

UUID_HOST = "6a1f0c2e-0000-4000-8000-00000000a101"
UUID_V2 = "6a1f0c2e-0000-4000-8000-00000000a102"
UUID_ELSEWHERE = "6a1f0c2e-0000-4000-8000-0000000dead0"
UUID_COPIED = "6a1f0c2e-0000-4000-8000-00000000c0c0"  # two VMs share it (a copied config)


def _node(fixture_name: str, name: str) -> dict:
    node = copy.deepcopy(next(n for n in FIXTURE["nodes"] if n["name"] == fixture_name))
    node["name"] = name
    return node


def _vm(vmid: int, node: str, name: str, cpu: str, uuid: str, **extra) -> dict:
    config = {"cpu": cpu, "smbios1": f"uuid={uuid}", "vmgenid": f"00000000-0000-4000-8000-{vmid:012d}"}
    config.update(extra.pop("config", {}))
    return {
        "vmid": vmid,
        "node": node,
        "name": name,
        "status": "running",
        "config": config,
        "running_machine": "pc-q35-8.1+pve0",
        **extra,
    }


def amd_scenario() -> dict:
    """The AMD cluster (EPYC 7313 flags of the service fixture), where the story's VM lives."""
    return {
        "_provenance": "EPYC 7313 flag set of tests/fixtures/service/scenario.json (pve4), two nodes",
        "cluster": "amd",
        "pve_version": "9.2.1",
        "token": FIXTURE["token"],
        "nodes": [_node("pve4", "pva1"), _node("pve4", "pva2")],
        "vms": [
            _vm(101, "pva1", "build01", "host", UUID_HOST),
            _vm(102, "pva1", "db01", "x86-64-v2-AES", UUID_V2),
            _vm(150, "pva2", "copy-a", "x86-64-v2-AES", UUID_COPIED),
            _vm(151, "pva2", "copy-b", "host", UUID_COPIED),
        ],
    }


def intel_scenario() -> dict:
    """The Intel cluster (Xeon Gold 6130 flags of the service fixture)."""
    return {
        "_provenance": "Xeon Gold 6130 flag set of tests/fixtures/service/scenario.json (pve1), two nodes",
        "cluster": "intel",
        "pve_version": "9.2.1",
        "token": {**FIXTURE["token"], "value": "5e0f3c2a-0000-4000-8000-00000000b0b0"},
        "nodes": [_node("pve1", "pvb1"), _node("pve1", "pvb2")],
        "vms": [_vm(301, "pvb2", "intel-app", "x86-64-v3", "6a1f0c2e-0000-4000-8000-00000000b301")],
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    store = flushed_redis(REDIS_URL, decode_responses=True)
    tmp = tmp_path_factory.mktemp("cross")
    amd = pve_testserver.start_server(amd_scenario())
    intel = pve_testserver.start_server(intel_scenario())
    (tmp / "intel.token").write_text(intel.token["value"] + "\n")
    clusters = {
        "clusters": [
            {
                "name": "intel",
                "host": intel.host_port,
                "user": intel.token["user"],
                "token_name": intel.token["name"],
                "token_value_file": "intel.token",
                "verify_ssl": intel.ca_path,
                "timeout": 2,
            }
        ]
    }
    (tmp / "clusters.json").write_text(json.dumps(clusters))
    settings = settings_for(
        amd,
        pve_cluster_name="amd",
        clusters_file=str(tmp / "clusters.json"),
        readyz_cache_s=0,
        api_tokens=TOKEN,
        redis_url=REDIS_URL,
        pve_timeout=2,
    )
    app = api.create_app(service_mod.build_service(settings), settings.bearer_tokens())
    with serving(app) as url:
        http = httpx.Client(base_url=url, headers=AUTH, timeout=15)
        yield {
            "url": url,
            "http": http,
            "amd": amd,
            "intel": intel,
            "redis": store,
            "tmp": tmp,
            "settings": settings,
        }
        http.close()
    amd.stop()
    intel.stop()
    store.flushdb()


def codes(body: dict) -> list[str]:
    return [r["code"] for r in body["reasons"]]


# --- questions before the move ------------------------------------------------------------------


def test_host_vm_to_the_intel_cluster_is_denied_naming_both_clusters(stack):
    answer = stack["http"].get("/v1/vms/101/check", params={"target": "pvb1", "target_cluster": "intel"})
    body = answer.json()
    assert answer.status_code == 200, body
    assert (body["verdict"], body["source"], body["target"]) == ("deny", "pva1", "pvb1")
    assert (body["source_cluster"], body["target_cluster"]) == ("amd", "intel")
    assert "vendor-mismatch" in codes(body)
    assert "precheck-skipped" in codes(body)  # Proxmox's own check covers one cluster only


def test_named_type_to_the_intel_cluster_is_allowed(stack):
    body = stack["http"].get("/v1/vms/102/check", params={"target": "pvb2", "target_cluster": "intel"}).json()
    assert body["verdict"] == "allow", body
    assert (body["source_cluster"], body["target_cluster"]) == ("amd", "intel")


def test_source_cluster_names_a_vm_of_the_other_cluster(stack):
    body = (
        stack["http"]
        .get(
            "/v1/vms/301/check", params={"target": "pva1", "source_cluster": "intel", "target_cluster": "amd"}
        )
        .json()
    )
    # x86-64-v3 on an EPYC 7313: runnable
    assert (body["verdict"], body["source_cluster"], body["target_cluster"]) == ("allow", "intel", "amd")


def test_same_cluster_question_is_unchanged(stack):
    body = stack["http"].get("/v1/vms/101/check", params={"target": "pva2"}).json()
    assert (body["verdict"], body["source_cluster"], body["target_cluster"]) == ("allow", "amd", "amd")


def test_unknown_cluster_and_node_say_what_to_do(stack):
    answer = stack["http"].get("/v1/vms/101/check", params={"target": "pvb1", "target_cluster": "arm"})
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error["code"] == "unknown-cluster"
    assert "reads amd, intel" in error["message"] and "MIGRATION_GUARD_CLUSTERS_FILE" in error["message"]
    answer = stack["http"].get("/v1/vms/101/check", params={"target": "pva9", "target_cluster": "intel"})
    assert answer.status_code == 404
    assert answer.json()["error"] == {
        "code": "unknown-node",
        "message": "cluster intel has no node pva9; its nodes are pvb1, pvb2",
    }


def test_a_cross_cluster_source_that_is_no_node_is_unknown_node(stack):
    """As on the same-cluster path: a ``source`` that is no node of the source cluster is the
    caller's mistake (404 unknown-node naming the nodes), never judged from wherever the VM is."""
    for params in ({"source_cluster": "amd"}, {}):
        answer = stack["http"].post(
            "/v1/decisions",
            json={"vmid": 101, "target": "pvb1", "source": "pva9", "target_cluster": "intel", **params},
        )
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] == {
            "code": "unknown-node",
            "message": "cluster amd has no node pva9 (the source given); its nodes are pva1, pva2",
        }
    same = stack["http"].post("/v1/decisions", json={"vmid": 101, "target": "pva2", "source": "pva9"})
    assert (same.status_code, same.json()["error"]["code"]) == (404, "unknown-node")


def test_targets_in_every_cluster(stack):
    body = stack["http"].get("/v1/vms/101/targets", params={"all_clusters": "1"}).json()
    seen = {(t["target_cluster"], t["target"]): t["verdict"] for t in body["targets"]}
    assert seen == {("amd", "pva2"): "allow", ("intel", "pvb1"): "deny", ("intel", "pvb2"): "deny"}
    assert body["clusters"] == ["amd", "intel"] and body["source_cluster"] == "amd"
    plain = stack["http"].get("/v1/vms/101/targets").json()
    assert [t["target"] for t in plain["targets"]] == ["pva2"]


def test_cli_check_cluster_slash_node(stack):
    env = {**os.environ, "MIGRATION_GUARD_URL": stack["url"], "MIGRATION_GUARD_TOKEN": TOKEN}
    cli = [sys.executable, "-m", "migration_guard.cli.main", "check"]
    denied = subprocess.run([*cli, "101", "intel/pvb1"], capture_output=True, text=True, env=env, timeout=60)
    assert denied.returncode == 1, denied.stderr
    assert denied.stdout.startswith("DENY  VM 101 (build01)  amd/pva1 -> intel/pvb1  cpu host")
    allowed = subprocess.run([*cli, "102", "intel/pvb2"], capture_output=True, text=True, env=env, timeout=60)
    assert allowed.returncode == 0, allowed.stderr
    unknown = subprocess.run([*cli, "102", "arm/x1"], capture_output=True, text=True, env=env, timeout=60)
    assert unknown.returncode == 2 and "no cluster 'arm'" in unknown.stderr


def test_the_bot_question_names_the_other_cluster(stack):
    from migration_guard.client import ServiceClient
    from migration_guard_bot.answers import answer
    from migration_guard_bot.parser import parse

    client = ServiceClient(stack["url"], TOKEN, timeout=15)
    try:
        no = answer(parse("can vm 101 move to intel/pvb1?"), client)
        yes = answer(parse("can vm 102 move to intel/pvb2?"), client)
        lost = answer(parse("can vm 102 move to arm/x1?"), client)
    finally:
        client.close()
    assert no.text.startswith("NO: VM 101 (build01) cannot move to intel/pvb1"), no.text
    assert "vendor-mismatch" in json.dumps(no.blocks)
    assert yes.text.startswith("YES: VM 102 (db01) can move to intel/pvb2"), yes.text
    assert "There is no cluster arm" in lost.text


def test_the_bot_where_can_it_go_asks_every_cluster(stack):
    from migration_guard.client import ServiceClient
    from migration_guard_bot.answers import answer
    from migration_guard_bot.parser import parse

    client = ServiceClient(stack["url"], TOKEN, timeout=15)
    try:
        where = answer(parse("where can vm 101 go?"), client)
    finally:
        client.close()
    assert where.text.startswith("VM 101 (build01) on pva1: can move to 1 of 3 other nodes"), where.text
    assert "pva2: yes" in where.text and "intel/pvb1: no" in where.text and "intel/pvb2: no" in where.text


# --- the remote decision (the hookscript on the target) ----------------------------------------


def decide(stack, **body) -> dict:
    answer = stack["http"].post("/v1/decisions", json={"mode": "enforce", "source": None, **body})
    assert answer.status_code == 200, answer.text
    return answer.json()


def incoming(stack, vmid: int, cpu: str, uuid: str) -> dict:
    """The target's copy of a remote migration: a new VMID, ``lock: migrate``, the same uuid."""
    vm = _vm(vmid, "pvb1", "build01", cpu, uuid, status="stopped", config={"lock": "migrate"})
    stack["intel"].put_vm(vm)
    return vm


# --- the real hookscript on the target node -----------------------------------------------------


def run_hook(stack, vmid: int, **env) -> subprocess.CompletedProcess:
    hook_conf = stack["tmp"] / f"hook-{vmid}.conf"
    hook_conf.write_text(f"url = {stack['url']}\ntoken = {TOKEN}\ntimeout = 5\nnode = pvb1\nfail = closed\n")
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "MIGRATION_GUARD_CONFIG": str(hook_conf),
        "PVE_MIGRATED_FROM": "",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-IS", str(HOOK), str(vmid), "pre-start"],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def test_the_hook_never_asks_about_a_start_without_a_source_node(stack):
    """A remote migration never runs the target's hook (the tunnel refuses a hookscript line), so a
    start of the target's copy (lock: migrate, no PVE_MIGRATED_FROM) is a root's qm start --skiplock:
    not asked, not recorded, not blocked, even with fail = closed."""
    incoming(stack, 9301, "host", UUID_HOST)
    before = stack["http"].get("/v1/decisions", params={"limit": 1000}).json()["decisions"]
    proc = run_hook(stack, 9301)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert stack["http"].get("/v1/decisions", params={"limit": 1000}).json()["decisions"] == before


def test_an_unreachable_cluster_is_an_unknown_verdict_naming_it(stack):
    from fastapi.testclient import TestClient

    amd = stack["amd"]
    path = stack["tmp"] / "dead-clusters.json"
    dead = {
        "name": "dead",
        "host": "127.0.0.1:9",
        "user": "guard@pve",
        "token_name": "check",
        "token_value": "x",
        "verify_ssl": False,
        "timeout": 1,
    }
    path.write_text(json.dumps({"clusters": [dead]}))
    settings = settings_for(
        amd, pve_cluster_name="amd", clusters_file=str(path), api_tokens=TOKEN, redis_url="", pve_timeout=2
    )
    app = api.create_app(service_mod.build_service(settings), settings.bearer_tokens())
    with TestClient(app, raise_server_exceptions=False) as c:
        answer = c.get("/v1/vms/101/check", params={"target": "x1", "target_cluster": "dead"}, headers=AUTH)
        body = answer.json()
        assert answer.status_code == 503, body
        assert (body["verdict"], body["source_cluster"], body["target_cluster"]) == ("unknown", "amd", "dead")
        assert codes(body) == ["cluster-unreachable"]
        assert "cannot reach Proxmox at 127.0.0.1:9" in body["reasons"][0]["message"]
        targets = c.get("/v1/vms/101/targets", params={"all_clusters": "1"}, headers=AUTH).json()
        assert [t["target"] for t in targets["targets"]] == ["pva2"]
        assert [(e["cluster"], e["code"]) for e in targets["errors"]] == [("dead", "cluster-unreachable")]


def test_readyz_names_every_cluster_and_degrades_when_another_is_down(stack):
    ready = stack["http"].get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["clusters"] == {"intel": "ok"}
    stack["intel"].set_faults(status=500)
    try:
        down = stack["http"].get("/readyz")
    finally:
        stack["intel"].set_faults()
    body = down.json()
    # this cluster's nodes still get answers: degraded, not "not ready"
    assert down.status_code == 200 and (body["status"], body["degraded"]) == ("degraded", True)
    assert body["clusters"]["intel"].startswith("unreachable: Proxmox at ")
    assert body["proxmox"] == "ok"


def test_the_background_refresher_keeps_every_cluster_fresh(stack):
    from fastapi.testclient import TestClient

    settings = settings_mod.load_settings(
        None, **{**stack["settings"].model_dump(), "redis_url": "", "pve_cluster_name": "amd"}
    )
    for server in (stack["amd"], stack["intel"]):
        server.reset_counts()
    app = api.create_app(service_mod.build_service(settings), settings.bearer_tokens(), refresh=True)
    with TestClient(app):  # no request: the lifespan alone reads both clusters' inventories
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = [set(server.requests()) for server in (stack["amd"], stack["intel"])]
            if all(
                {"/nodes", "/cluster/resources"} <= paths and any(p.endswith("/status") for p in paths)
                for paths in seen
            ):
                break
            time.sleep(0.05)
    for name, paths in zip(("amd", "intel"), seen, strict=True):
        assert {"/nodes", "/cluster/resources"} <= paths, (name, paths)
        assert any(p.endswith("/status") and p.startswith("/nodes/") for p in paths), (name, paths)
