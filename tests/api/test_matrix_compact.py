"""GET /v1/matrix?format=compact: the same verdicts as the full form, each distinct cell once;
a warm matrix judges nothing again."""

from __future__ import annotations

import json
import time

from fastapi.testclient import TestClient

from migration_guard.api.app import create_app
from migration_guard.api.models.matrix import MatrixAnswer
from migration_guard.service import matrix as matrix_module
from tests.fakes.service import AUTH, SCENARIO, TOKEN, FakeReader, make_service


def _service_with_twins():
    scenario = json.loads(json.dumps(SCENARIO))
    first = scenario["vms"][0]
    scenario["vms"].extend(
        [
            dict(first, vmid=901, name="twin-a"),
            dict(first, vmid=902, name="twin-b", status="stopped"),
            dict(first, vmid=903, name="twin-c", tags="migration-guard-skip"),
        ]
    )
    return make_service(FakeReader(scenario))


def test_compact_matrix_has_the_full_forms_cells():
    with TestClient(create_app(_service_with_twins(), (TOKEN,))) as c:
        full = c.get("/v1/matrix", headers=AUTH).json()
        compact = c.get("/v1/matrix", params={"format": "compact"}, headers=AUTH).json()
    MatrixAnswer.model_validate(full)
    MatrixAnswer.model_validate(compact)
    assert compact["format"] == "compact" and "format" not in full
    assert compact["nodes"] == full["nodes"]
    assert len(compact["cells"]) == len({json.dumps(c, sort_keys=True) for c in compact["cells"]})
    assert [r["vmid"] for r in compact["vms"]] == [r["vmid"] for r in full["vms"]]
    compared = 0
    for crow, frow in zip(compact["vms"], full["vms"], strict=True):
        assert {k: crow[k] for k in ("vmid", "name", "node", "status", "cpu")} == {
            k: frow[k] for k in ("vmid", "name", "node", "status", "cpu")
        }
        assert len(crow["targets"]) == len(compact["nodes"])
        for node, index in zip(compact["nodes"], crow["targets"], strict=True):
            if node == crow["node"]:
                assert index is None and node not in frow["targets"]
                continue
            assert compact["cells"][index] == frow["targets"][node], (crow["vmid"], node)
            compared += 1
    assert compared == sum(len(r["targets"]) for r in full["vms"]) > 20
    verdicts = {c["verdict"] for c in compact["cells"]}
    assert {"allow", "deny"} <= verdicts


def test_warm_matrix_judges_nothing_again(monkeypatch):
    calls = []
    judge = matrix_module._judge

    def counting(*args, **kwargs):
        calls.append(args[0].vmid)
        return judge(*args, **kwargs)

    monkeypatch.setattr(matrix_module, "_judge", counting)
    with TestClient(create_app(_service_with_twins(), (TOKEN,))) as c:
        first = c.get("/v1/matrix", headers=AUTH).json()
        judged = len(calls)
        cells = sum(len(r["targets"]) for r in first["vms"])
        assert 0 < judged < cells  # VMs alike (901 is 101's twin) share their cells
        second = c.get("/v1/matrix", params={"format": "compact"}, headers=AUTH).json()
        third = c.get("/v1/matrix", headers=AUTH).json()
    assert len(calls) == judged  # the node facts did not change: no cell judged again
    assert third["vms"] == first["vms"] and len(second["vms"]) == len(first["vms"])


def test_unknown_matrix_format_is_refused():
    with TestClient(create_app(_service_with_twins(), (TOKEN,))) as c:
        answer = c.get("/v1/matrix", params={"format": "tiny"}, headers=AUTH)
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "bad-input"


class _CustomModels(FakeReader):
    """The in-memory cluster with Proxmox's custom CPU models endpoint (its text settable)."""

    text = ""

    def custom_cpu_models(self) -> str | None:
        return self.text


def test_a_custom_model_created_later_is_judged_again():
    """Cells are kept while the node facts stay; a custom-NAME VM's verdict also depends on the
    model's definition, read with the VM: a model created after the first matrix (read again at
    once, the node facts unchanged) must not leave the old ``unknown`` cells."""
    scenario = json.loads(json.dumps(SCENARIO))
    scenario["vms"][0]["config"]["cpu"] = "custom-wide"
    reader = _CustomModels(scenario)
    reader.text = "cpu-model: other\n\treported-model kvm64\n\n"
    service = make_service(reader, cache_vm_ttl=0, cache_node_ttl=3600)
    vmid = scenario["vms"][0]["vmid"]
    with TestClient(create_app(service, (TOKEN,))) as c:
        for _ in range(2):  # the second: from cells kept, on the node facts the first one read
            before = next(r for r in c.get("/v1/matrix", headers=AUTH).json()["vms"] if r["vmid"] == vmid)
        reader.text += "cpu-model: wide\n\treported-model kvm64\n\n"
        time.sleep(1.1)  # the list is read again for a missing model at most once a second
        after = next(r for r in c.get("/v1/matrix", headers=AUTH).json()["vms"] if r["vmid"] == vmid)
        checks = {
            n: c.get(f"/v1/vms/{vmid}/check", params={"target": n}, headers=AUTH).json()
            for n in after["targets"]
        }
    online = [n for n, cell in before["targets"].items() if cell["code"] != "target-offline"]
    assert online and all(before["targets"][n]["verdict"] == "unknown" for n in online), before
    assert {n: cell["verdict"] for n, cell in after["targets"].items()} == {
        n: b["verdict"] for n, b in checks.items()
    }
    assert all(after["targets"][n]["verdict"] == "allow" for n in online), after["targets"]
