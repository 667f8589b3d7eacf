"""GET /v1/matrix?format=compact: the same verdicts as the full form, each distinct cell once;
a warm matrix judges nothing again."""

from __future__ import annotations

import json

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
