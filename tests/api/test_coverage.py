"""GET /v1/coverage, the migration_guard_unguarded_vms gauge, the client and `migration-guard coverage`,
over proxmoxer speaking HTTPS to the Proxmox-shaped test server (the demo's cluster, and variants)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from migration_guard.api.app import create_app
from migration_guard.api.models.coverage import CoverageBody
from migration_guard.cli.coverage import format_coverage
from migration_guard.client import ServiceClient
from migration_guard.service.guard import build_service
from tests.fakes.pve import pve_server
from tests.support.service_stack import serving, settings_for

TOKEN = "coverage-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEMO = json.loads(
    (Path(__file__).resolve().parents[2] / "shared/migration_guard/data/demo_scenario.json").read_text()
)


def app_for(pve):
    settings = settings_for(pve, api_tokens=TOKEN, pve_cluster_name="demo", redis_url="memory://")
    return create_app(build_service(settings), settings.bearer_tokens())


def coverage(scenario: dict) -> dict:
    with pve_server(scenario) as pve, TestClient(app_for(pve)) as client:
        answer = client.get("/v1/coverage", headers=AUTH)
        assert answer.status_code == 200, answer.text
        return CoverageBody.model_validate(answer.json()).model_dump()


def test_the_demo_has_guarded_and_unguarded_vms_and_a_node_without_the_file():
    body = coverage(DEMO)
    assert (body["vms"], body["guarded"]) == (8, 5)
    assert [(v["vmid"], v["status"]) for v in body["unguarded"]] == [
        (104, "running"),
        (106, "running"),
        (108, "stopped"),
    ]
    assert {v["vmid"]: v["missing_on"] for v in body["missing_volume"]} == {
        vmid: ["pve-atom1"] for vmid in (101, 102, 103, 105, 107)
    }
    assert body["volume_check"] == "done" and body["nodes_not_asked"] == []
    text = format_coverage(body)
    assert text.splitlines()[0] == (
        "cluster demo: 5 of 8 VMs guarded, 3 unguarded, 5 with the hookscript file missing on some node"
    )
    assert "  unguarded  VM 106 cache01 on pve-epyc1, running" in text


def test_templates_skip_tags_other_hookscripts_and_a_token_without_datastore_audit():
    scenario = copy.deepcopy(DEMO)
    vms = {vm["vmid"]: vm for vm in scenario["vms"]}
    vms[104]["tags"] = "migration-guard-skip"
    vms[106]["config"]["hookscript"] = "local:snippets/backup-hook.sh"
    template = copy.deepcopy(vms[108])
    template.update(vmid=109, name="tmpl", template=1)
    template["config"]["template"] = 1
    scenario["vms"].append(template)
    for node in scenario["nodes"]:
        node["snippets"] = {"local": ["migration-guard-hook"]}  # now every node has the file
    body = coverage(scenario)
    assert [v["vmid"] for v in body["unguarded"]] == [106, 108]
    assert body["unguarded"][0]["hookscript"] == "local:snippets/backup-hook.sh"
    assert body["skipped"] == [
        {
            "vmid": 104,
            "name": "analytics01",
            "node": "pve-xeon-csl",
            "status": "running",
            "why": "tagged migration-guard-skip",
        }
    ]
    assert body["missing_volume"] == [] and body["vms"] == 8  # the template is not counted

    scenario["token"]["privileges"].remove("Datastore.Audit")
    body = coverage(scenario)
    assert body["missing_volume"] == [] and body["volume_check"].startswith(
        "skipped: the service's Proxmox token"
    )


def test_metrics_gauge_and_the_client_over_http():
    with pve_server(DEMO) as pve, serving(app_for(pve)) as url:
        with ServiceClient(url, TOKEN, timeout=30) as client:
            body = client.coverage()
        assert len(body["unguarded"]) == 3
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
        assert "migration_guard_unguarded_vms 3.0" in metrics
        assert httpx.get(f"{url}/v1/coverage", timeout=30).status_code == 401


@pytest.mark.parametrize("path", ["/v1/coverage", "/v1/node-kit"])
def test_new_paths_need_the_token(path):
    with pve_server(DEMO) as pve, TestClient(app_for(pve)) as client:
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
