"""The test server's /cluster/qemu/custom-cpu-models, as pve-manager's CustomCPUModels.pm answers:
the list filtered by Mapping.* privileges, 501 before pve-manager 9.1.14, and POST's privilege,
parameter and duplicate checks."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request

import pytest

from migration_guard.demo.pve_server import start_server

PATH = "/api2/json/cluster/qemu/custom-cpu-models"


def scenario(privileges: list[str], version: str = "9.2.1") -> dict:
    return {
        "cluster": "t",
        "pve_version": version,
        "token": {"user": "guard@pve", "name": "t", "value": "s3cret", "privileges": privileges},
        "custom_cpu_models": [{"name": "b", "reported-model": "kvm64", "phys-bits": "40"}, {"name": "a"}],
        "nodes": [{"name": "pve1", "cpu_ref": "intel-skylake-sp-gold-6130"}],
        "vms": [],
    }


def call(server, method: str = "GET", form: dict | None = None) -> tuple[int, object]:
    t = server.token
    headers = {"Authorization": f"PVEAPIToken={t['user']}!{t['name']}={t['value']}"}
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    if data is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(server.url + PATH, data=data, headers=headers, method=method)
    ctx = ssl.create_default_context(cafile=server.ca_path)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture
def served(request):
    server = start_server(scenario(*request.param))
    yield server
    server.stop()


@pytest.mark.parametrize("served", [(["Mapping.Audit"],)], indirect=True)
def test_the_list_is_sorted_with_cputype_and_digest(served):
    status, body = call(served)
    assert status == 200
    rows = body["data"]
    assert [r["cputype"] for r in rows] == ["custom-a", "custom-b"]
    assert rows[1]["phys-bits"] == "40" and rows[0]["digest"] == rows[1]["digest"]


@pytest.mark.parametrize("served", [(["Sys.Audit"],)], indirect=True)
def test_without_a_mapping_privilege_the_list_is_empty_not_refused(served):
    assert call(served) == (200, {"data": []})
    status, _ = call(served, "POST", {"cputype": "x", "reported-model": "kvm64"})
    assert status == 403


@pytest.mark.parametrize("served", [(["Mapping.Audit"], "9.1.10")], indirect=True)
def test_before_pve_manager_9_1_14_there_is_no_endpoint(served):
    assert call(served)[0] == 501


@pytest.mark.parametrize("served", [(["Mapping.Modify"],)], indirect=True)
def test_post_creates_checks_and_refuses_a_duplicate(served):
    assert (
        call(served, "POST", {"cputype": "custom-new", "reported-model": "kvm64", "flags": "+aes"})[0] == 200
    )
    assert "custom-new" in [r["cputype"] for r in call(served)[1]["data"]]
    assert call(served, "POST", {"cputype": "new", "reported-model": "kvm64"})[0] == 500
    assert call(served, "POST", {"cputype": "new2"})[0] == 400  # reported-model required from 9.1.18
    assert call(served, "POST", {"cputype": "1bad", "reported-model": "kvm64"})[0] == 400
    assert call(served, "POST", {"cputype": "x", "reported-model": "kvm64", "flags": "aes"})[0] == 400
