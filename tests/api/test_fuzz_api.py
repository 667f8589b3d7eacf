"""Hardening: the HTTP API fuzzed from its own OpenAPI schema (schemathesis + hypothesis).

The app runs over the in-memory cluster of tests/api/test_api.py (FakeReader, fakeredis), called in
process (ASGI). The hot check route parses its parameters by hand, so the schema FastAPI generates
does not list them: they are added here (vmid path, target / target_cluster / source_cluster query)
so the fuzzer reaches them too. Every generated request is sent with a valid bearer token (to get
past auth into the handlers) and, for a share, with a wrong or missing one.

Properties: no 5xx other than 503 (503 is the defined "cluster unreachable" answer, never raised
by this in-memory cluster either), every 4xx/5xx is the JSON error shape
``{"error": {"code", "message"}}`` with one-line strings, and no answer carries a traceback.
Bounded: a few dozen examples per operation; the whole file runs in well under 60 s.
"""

from __future__ import annotations

import copy
import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migration_guard.api.app import create_app
from tests.fakes.service import TOKEN, FakeReader, make_service

AUTH = {"Authorization": f"Bearer {TOKEN}"}

app = create_app(make_service(FakeReader()), (TOKEN,))


async def without_lifespan(scope, receive, send):
    """The app without its lifespan: schemathesis runs one per call, and the app's shutdown closes
    the service (its thread pool) that the next call needs."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await app(scope, receive, send)


def _schema_with_check_parameters() -> dict:
    raw = copy.deepcopy(app.openapi())
    check = raw["paths"]["/v1/vms/{vmid}/check"]["get"]
    check["parameters"] = [
        {"name": "vmid", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "target", "in": "query", "required": True, "schema": {"type": "string"}},
        {"name": "target_cluster", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "source_cluster", "in": "query", "required": False, "schema": {"type": "string"}},
    ]
    # a 422 is a documented answer of every route (the error shape is checked below)
    return raw


schema = schemathesis.openapi.from_dict(_schema_with_check_parameters())
schema.app = without_lifespan

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


def assert_well_formed(status: int, content_type: str, text: str) -> None:
    assert status < 500 or status == 503, (status, text[:500])
    assert "Traceback" not in text and 'File "' not in text, text[:500]
    if status >= 400:
        if content_type.startswith("text/plain"):  # the hook's contract on POST /v1/decisions
            fields = dict(line.split("=", 1) for line in text.splitlines())
            assert fields["verdict"] == "unknown" and fields["exit"] == "5" and fields["code"], text
            return
        assert content_type.startswith("application/json"), (status, content_type, text[:300])
        body = json.loads(text)
        assert set(body) == {"error"}, body
        error = body["error"]
        assert isinstance(error["code"], str) and error["code"], body
        assert isinstance(error["message"], str) and error["message"], body
        assert "\n" not in error["message"], body
        assert set(error) <= {"code", "message", "field"}, body


@schema.parametrize()
@FUZZ
def test_api_never_5xx_and_errors_are_the_json_shape(case):
    response = case.call(headers=AUTH)
    assert_well_formed(
        response.status_code,
        response.headers.get("content-type", [""])[0]
        if isinstance(response.headers.get("content-type"), list)
        else response.headers.get("content-type", ""),
        response.text,
    )


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_without_a_valid_token_every_v1_path_is_401_json(case):
    response = case.call(headers={"Authorization": "Bearer not-the-token"})
    ctype = response.headers.get("content-type", "")
    ctype = ctype[0] if isinstance(ctype, list) else ctype
    if case.path.startswith("/v1/"):
        assert response.status_code in (401, 404, 405, 422), (response.status_code, response.text[:300])
        # auth runs before the handler: a wrong token never reaches the cluster
        if response.status_code != 401:
            assert response.status_code in (404, 405, 422)
    assert_well_formed(response.status_code, ctype, response.text)


# --- hypothesis straight at the hot route and the hook's POST, with hostile strings --------------

from fastapi.testclient import TestClient  # noqa: E402

client = TestClient(app, raise_server_exceptions=False)

hostile = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "101",
            "pve2",
            "../../etc/passwd",
            "pve2\r\nX-Injected: 1",
            "%00",
            "\u202e",
            "a" * 300,
            "1e9",
            "999999999999",
            " 101",
            "pve2?x=y",
            "<script>",
            "*",
            "pve1,pve2",
        ]
    ),
)


@given(vmid=hostile, target=hostile)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_check_route_with_hostile_strings(vmid, target):
    from urllib.parse import quote

    path = f"/v1/vms/{quote(vmid, safe='')}/check"
    answer = client.get(path, params={"target": target}, headers=AUTH)
    assert_well_formed(answer.status_code, answer.headers.get("content-type", ""), answer.text)
    if answer.status_code == 200:
        assert answer.json()["verdict"] in ("allow", "deny", "unknown")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)


@given(
    body=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"vmid": json_values, "target": json_values},
            optional={"source": json_values, "mode": json_values, "cpu": json_values, "remote": json_values},
        ),
    ),
    accept=st.sampled_from(["application/json", "text/plain", "*/*"]),
)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_decisions_with_hostile_bodies(body, accept):
    answer = client.post("/v1/decisions", json=body, headers={**AUTH, "Accept": accept})
    ctype = answer.headers.get("content-type", "")
    assert_well_formed(answer.status_code, ctype, answer.text)
    if accept == "text/plain":
        assert ctype.startswith("text/plain")
        fields = dict(line.split("=", 1) for line in answer.text.splitlines())
        assert fields["exit"] in {"0", "1", "2", "3", "4", "5"}


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b"null", b'{"vmid": 101, "target": "pve2"' + b" " * 10, b"\xff\xfe", b"{" * 5000],
)
def test_decisions_with_broken_json_bodies(raw):
    answer = client.post("/v1/decisions", content=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert_well_formed(answer.status_code, answer.headers["content-type"], answer.text)
