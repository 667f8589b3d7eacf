"""The Proxmox-shaped test server itself: auth, answer shapes, faults, counts, process mode."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest

from tests.fakes.pve import pve_process, pve_server


@pytest.fixture(scope="module")
def demo():
    with pve_server("demo") as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(demo):
    demo.set_faults()
    yield
    demo.set_faults()


def _get(server, path, *, token=None, method="GET", body=None, ca=None, base=None):
    t = server.token if token is None else token
    headers = {"Authorization": f"PVEAPIToken={t['user']}!{t['name']}={t['value']}"} if t else {}
    url = (base or server.url) + path
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    ctx = ssl.create_default_context(cafile=ca or server.ca_path)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"null")
        except ValueError:
            return exc.code, raw.decode()


def test_answers_are_wrapped_in_data(demo):
    status, body = _get(demo, "/api2/json/version")
    assert status == 200 and body["data"]["version"].startswith("9.")
    status, body = _get(demo, "/api2/json/nodes")
    assert {n["node"] for n in body["data"]} == {"pve-epyc1", "pve-xeon-bdw", "pve-xeon-csl", "pve-atom1"}


def test_node_status_has_cpuinfo_and_versions(demo):
    _, body = _get(demo, "/api2/json/nodes/pve-atom1/status")
    info = body["data"]["cpuinfo"]
    assert "Atom" in info["model"] and "avx" not in info["flags"].split()
    assert body["data"]["pveversion"].startswith("pve-manager/")


def test_cpu_flags_shape(demo):
    _, body = _get(demo, "/api2/json/cluster/qemu/cpu-flags")
    on = {e["name"]: e["supported-on"] for e in body["data"]}
    assert on["avx2"] == ["pve-epyc1", "pve-xeon-csl"]  # the nodes with a recorded KVM report
    assert on["avx512f"] == ["pve-xeon-csl"] and on["nested-virt"] == ["pve-epyc1", "pve-xeon-csl"]
    # no recording for the Broadwell and Atom nodes: named under no flag, as a node without a
    # cpuflags-kvm entry is by pve-manager, although the recorded flags are still listed
    named = {node for nodes in on.values() for node in nodes}
    assert named == {"pve-epyc1", "pve-xeon-csl"} and "sse4-2" in on


def test_cpu_flags_501_on_old_proxmox():
    with pve_server("old_proxmox") as old:
        status, _ = _get(old, "/api2/json/cluster/qemu/cpu-flags")
    assert status == 501


def test_missing_or_wrong_token_is_401(demo):
    assert _get(demo, "/api2/json/nodes", token={})[0] == 401
    bad = dict(demo.token, value="wrong")
    assert _get(demo, "/api2/json/nodes", token=bad)[0] == 401


def test_unknown_vm_is_proxmox_500(demo):
    status, body = _get(demo, "/api2/json/nodes/pve-epyc1/qemu/999/config")
    assert status == 500


def test_auditor_token_gets_403_on_migrate(demo):
    scenario = dict(demo.scenario)
    scenario["token"] = dict(scenario["token"], privileges=["VM.Audit", "Sys.Audit"])
    with pve_server(scenario) as auditor:
        assert _get(auditor, "/api2/json/nodes/pve-epyc1/qemu/101/migrate?target=pve-atom1")[0] == 403
        assert _get(auditor, "/api2/json/nodes/pve-epyc1/qemu/101/config")[0] == 200
    status, body = _get(demo, "/api2/json/nodes/pve-epyc1/qemu/101/migrate?target=pve-atom1")
    assert status == 200 and "allowed_nodes" in body["data"]


def test_request_counts_and_reset(demo):
    _get(demo, "/_test/reset", method="POST", body={})
    for _ in range(3):
        _get(demo, "/api2/json/nodes")
    counts = demo.requests()
    assert counts.get("/nodes") == 3
    _, body = _get(demo, "/_test/requests", token={})
    assert json.dumps(body).count("/nodes") >= 1


def test_fault_status_for_some_paths(demo):
    _get(
        demo, "/_test/faults", method="POST", body={"status": 503, "paths": ["/cluster/resources"]}, token={}
    )
    assert _get(demo, "/api2/json/cluster/resources?type=vm")[0] == 503
    assert _get(demo, "/api2/json/nodes")[0] == 200


def test_node_offline_and_dropped_flags(demo):
    demo.set_faults(node_offline="pve-atom1", drop_flags="pve-xeon-bdw")
    status, _ = _get(demo, "/api2/json/nodes/pve-atom1/status")
    assert status == 595
    _, body = _get(demo, "/api2/json/nodes/pve-xeon-bdw/status")
    assert "flags" not in body["data"]["cpuinfo"]


def test_put_vm_replaces_config(demo):
    vm = dict(demo.scenario["vms"][1])
    vm["config"] = dict(vm["config"], lock="migrate")
    _get(demo, "/_test/vms", method="POST", body=vm, token={})
    _, body = _get(demo, f"/api2/json/nodes/{vm['node']}/qemu/{vm['vmid']}/config")
    assert body["data"]["lock"] == "migrate"


@pytest.mark.integration
def test_process_mode_prints_ready_and_serves():
    from migration_guard.demo.pve_scenario import load_scenario

    t = load_scenario("demo")["token"]
    with pve_process("demo") as proc:
        ctx = ssl.create_default_context(cafile=proc.ca_path)
        req = urllib.request.Request(
            proc.url + "/api2/json/nodes",
            headers={"Authorization": f"PVEAPIToken={t['user']}!{t['name']}={t['value']}"},
        )
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            assert len(json.loads(resp.read())["data"]) == 4
    assert proc.process.returncode == 0  # SIGTERM ends it cleanly
