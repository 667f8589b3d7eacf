"""The OpenAPI schema is the contract: every /v1 route (and the health routes) documents the shape
of its 200 answer with named properties, and the real answers of the service over the demo cluster
(the Proxmox-shaped test server of ``serve --demo``) are those shapes, field for field."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from migration_guard.api import models
from migration_guard.api.app import create_app
from migration_guard.demo.stack import start_demo
from migration_guard.errors import ProxmoxAuthError, ProxmoxUnreachable
from migration_guard.service.guard import build_service
from migration_guard.service.metrics import CONTENT_TYPE
from tests.fakes.service import AUTH, TOKEN, FakeReader, make_service

JSON = "application/json"
#: the routes whose 503 is a verdict (unknown, with the reason), not an error
VERDICT_503 = {("get", "/v1/vms/{vmid}/check"), ("post", "/v1/decisions")}


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_every_route_documents_its_answer_shape():
    schema = create_app(make_service(FakeReader()), (TOKEN,)).openapi()
    documented = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            if path == "/metrics":  # Prometheus text, not JSON
                assert list(op["responses"]["200"]["content"]) == [CONTENT_TYPE]
                continue
            ok = op["responses"]["200"]["content"][JSON]["schema"]
            body = _resolve(schema, ok)
            assert body.get("type") == "object" and body.get("properties"), (method, path, ok)
            documented.append((method, path, _resolve(schema, ok).get("title")))
            for status, answer in op["responses"].items():
                if status.startswith(("4", "5")) and path.startswith("/v1/"):
                    error = _resolve(schema, answer["content"][JSON]["schema"])
                    if status == "503" and (method, path) in VERDICT_503:
                        assert "verdict" in error["properties"], (method, path)  # unknown, why
                        continue
                    assert set(error["properties"]) == {"error"}, (method, path, status)
    assert ("get", "/v1/vms/{vmid}/check", "VerdictBody") in documented
    assert ("get", "/v1/vms/{vmid}/targets", "TargetsBody") in documented
    assert ("post", "/v1/decisions", "DecisionBody") in documented
    assert ("get", "/v1/decisions", "DecisionsBody") in documented
    assert ("get", "/v1/cluster", "ClusterView") in documented
    # the recommendation with its what-if block (add=/remove=): RecommendationBody plus what_if
    assert ("get", "/v1/cluster/recommendation", "RecommendationWhatIfBody") in documented
    assert ("post", "/v1/cluster/recommendation", "RecommendationWhatIfBody") in documented
    assert ("get", "/v1/cpus", "CpusBody") in documented
    assert ("get", "/v1/drift", "DriftBody") in documented
    assert ("get", "/v1/matrix", "MatrixAnswer") in documented
    assert ("get", "/readyz", "Readyz") in documented
    verdict = schema["components"]["schemas"]["VerdictBody"]["properties"]
    assert {"verdict", "reasons", "suggestion", "checked_at"} <= set(verdict)
    view = schema["components"]["schemas"]["ClusterView"]["properties"]
    assert {"nodes", "rolling_upgrade"} <= set(view)


def _undocumented(model: BaseModel, where: str = "") -> list[str]:
    """The fields of an answer its model does not name, at any depth."""
    out = [f"{where}.{k}" for k in (model.model_extra or {})]
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = (
            value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
        )
        for i, item in enumerate(items):
            if isinstance(item, BaseModel):
                out += _undocumented(item, f"{where}.{name}[{i}]")
    return out


def conforms(model: type[BaseModel], body: Any) -> BaseModel:
    parsed = model.model_validate(body)
    assert not _undocumented(parsed), (model.__name__, _undocumented(parsed))
    return parsed


@pytest.fixture(scope="module")
def demo():
    running = start_demo(None, api_tokens=TOKEN, redis_url="")
    try:
        service = build_service(running.settings)
        with TestClient(create_app(service, (TOKEN,)), raise_server_exceptions=False) as client:
            yield client
    finally:
        running.stop()


def test_the_demo_services_answers_are_the_documented_shapes(demo):
    view = conforms(models.ClusterView, demo.get("/v1/cluster", headers=AUTH).json())
    assert view.nodes
    matrix = conforms(models.MatrixBody, demo.get("/v1/matrix", headers=AUTH).json())
    row = matrix.vms[0]
    target = next(iter(row.targets))
    answer = demo.get(f"/v1/vms/{row.vmid}/check", params={"target": target}, headers=AUTH)
    assert answer.status_code == 200
    verdict = conforms(models.VerdictBody, answer.json())
    assert (verdict.vmid, verdict.target, verdict.verdict) == (row.vmid, target, row.targets[target].verdict)
    targets = conforms(models.TargetsBody, demo.get(f"/v1/vms/{row.vmid}/targets", headers=AUTH).json())
    assert {t.target for t in targets.targets} == set(row.targets)
    everywhere = demo.get(f"/v1/vms/{row.vmid}/targets", params={"all_clusters": 1}, headers=AUTH)
    conforms(models.TargetsBody, everywhere.json())
    decided = demo.post("/v1/decisions", json={"vmid": row.vmid, "target": target}, headers=AUTH)
    decision = conforms(models.DecisionBody, decided.json())
    log = conforms(models.DecisionsBody, demo.get("/v1/decisions", headers=AUTH).json())
    assert log.decisions[0].id == decision.decision_id
    conforms(models.RecommendationBody, demo.get("/v1/cluster/recommendation", headers=AUTH).json())
    conforms(models.Readyz, demo.get("/readyz", headers=AUTH).json())
    assert conforms(models.Readyz, demo.get("/readyz").json()).model_dump(exclude_none=True) == {
        "status": "ready"
    }
    conforms(models.Healthz, demo.get("/healthz").json())
    refused = demo.post("/v1/decisions", json={"vmid": 999999, "target": target}, headers=AUTH)
    assert refused.status_code == 404
    conforms(models.DecisionsBody, demo.get("/v1/decisions", headers=AUTH).json())
    missing = demo.get("/v1/vms/999999/check", params={"target": target}, headers=AUTH)
    assert missing.status_code == 404
    conforms(models.ErrorBody, missing.json())


def test_failure_answers_are_the_documented_shapes():
    """A check while Proxmox is unreachable (503 with verdict unknown) and a decision Proxmox
    refused (502, recorded in the audit log) answer the documented shapes too."""
    reader = FakeReader()
    with TestClient(create_app(make_service(reader), (TOKEN,)), raise_server_exceptions=False) as client:
        reader.error = ProxmoxUnreachable("cannot reach pve1:8006")
        answer = client.get("/v1/vms/101/check", params={"target": "pve3"}, headers=AUTH)
        assert answer.status_code == 503
        assert conforms(models.VerdictBody, answer.json()).verdict == "unknown"
        reader.error = ProxmoxAuthError("Proxmox refused the token guard@pve!check (401)")
        refused = client.post("/v1/decisions", json={"vmid": 101, "target": "pve3"}, headers=AUTH)
        assert refused.status_code == 502
        conforms(models.ErrorBody, refused.json())
        reader.error = None
        log = conforms(models.DecisionsBody, client.get("/v1/decisions", headers=AUTH).json())
        assert (log.decisions[0].code, log.decisions[0].status) == ("proxmox-auth", 502)
