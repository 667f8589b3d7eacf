"""Hostile input and careless operation, round 2: the service's body limit, VM ids and node names
matched whole, an unknown source, 405 with Allow, the OpenAPI schema, 502 decisions in the audit
log, /readyz without the token, the warnings ``serve`` gives at start, and vetoes queued while
Redis is down surviving a restart (spool in MIGRATION_GUARD_STATE_DIR, each written once)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import httpx
import pytest
import redis as redis_sync
from fastapi.testclient import TestClient

from migration_guard.api.app import create_app
from migration_guard.demo.pve_server import start_server
from migration_guard.errors import ConfigError, ProxmoxAuthError
from migration_guard.service.guard import build_service
from migration_guard.store.events import DECISIONS_STREAM, EVENTS_STREAM, SPOOL_FILE
from tests.api.test_api import AUTH, TOKEN, FakeReader, make_service
from tests.support.e2e import Proc, cli_argv, free_port, wait_until
from tests.support.redis_server import start_redis
from tests.system.test_hardening_faults import AUTH as SERVICE_AUTH
from tests.system.test_hardening_faults import scenario, service_env, start_service


@pytest.fixture
def reader():
    return FakeReader()


@pytest.fixture
def client(reader):
    service = make_service(reader, readyz_cache_s=0)
    with TestClient(create_app(service, (TOKEN,)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def pve():
    server = start_server(scenario())
    yield server
    server.stop()


# --- body limit --------------------------------------------------------------------------------


def _too_large(answer: httpx.Response) -> None:
    assert answer.status_code == 413, answer.text
    error = answer.json()["error"]
    assert error["code"] == "too-large" and "65536 bytes" in error["message"]


@pytest.mark.parametrize("path", ["/v1/decisions", "/healthz", "/v1/vms/101/check?target=pve2", "/nowhere"])
def test_a_declared_body_over_the_limit_is_413_json_for_everyone(client, path):
    big = b"x" * (64 * 1024 + 1)
    _too_large(client.post(path, content=big, headers={"Content-Type": "application/json"}))
    _too_large(client.post(path, content=big, headers={**AUTH, "Content-Type": "application/json"}))


def test_a_chunked_body_over_the_limit_is_413_and_not_recorded(client):
    def chunks():
        for _ in range(200):
            yield b" " * 1024

    answer = client.post(
        "/v1/decisions", content=chunks(), headers={**AUTH, "Content-Type": "application/json"}
    )
    _too_large(answer)
    assert client.get("/v1/decisions", headers=AUTH).json()["decisions"] == []


def test_the_hook_gets_its_key_value_lines_for_a_body_too_large(client):
    answer = client.post(
        "/v1/decisions", content=b"{" + b" " * 70_000 + b"}", headers={**AUTH, "Accept": "text/plain"}
    )
    lines = dict(line.split("=", 1) for line in answer.text.splitlines())
    assert answer.status_code == 413 and (lines["verdict"], lines["code"], lines["exit"]) == (
        "unknown",
        "too-large",
        "5",
    )


def test_a_body_within_the_limit_still_decides(client):
    body = json.dumps({"vmid": 101, "target": "pve3", "cpu": None}) + " " * 60_000
    answer = client.post("/v1/decisions", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.json()["verdict"] == "deny"


def test_the_limit_is_a_setting(reader):
    service = make_service(reader, max_body_bytes=2048)
    with TestClient(create_app(service, (TOKEN,)), raise_server_exceptions=False) as c:
        answer = c.post("/v1/decisions", content=b" " * 3000, headers=AUTH)
        assert answer.status_code == 413 and "2048 bytes" in answer.json()["error"]["message"]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.integration
@pytest.mark.parametrize("chunked", [False, True])
def test_200_mb_streamed_is_refused_without_the_service_growing(pve, chunked):
    service, base = start_service(pve)
    try:
        before = _rss_kib(service.pid)
        sent = 0

        def body():
            nonlocal sent
            block = b"x" * (1 << 20)
            for _ in range(200):
                sent += len(block)
                yield block

        headers = {**SERVICE_AUTH, "Content-Type": "application/json"}  # a token holder
        if not chunked:
            headers["Content-Length"] = str(200 << 20)
        try:
            answer = httpx.post(base + "/v1/decisions", content=body(), headers=headers, timeout=60)
            status = answer.status_code
            assert answer.json()["error"]["code"] == "too-large"
        except httpx.HTTPError:  # the service closed the connection after its 413
            status = 413
        assert status == 413
        grown_mib = (_rss_kib(service.pid) - before) / 1024
        assert grown_mib < 40, f"the service grew by {grown_mib:.0f} MiB"
        assert httpx.get(base + "/healthz", timeout=10).status_code == 200
    finally:
        service.stop()


# --- VM ids and node names -----------------------------------------------------------------------


BAD_VMIDS = [
    "+101",
    "1_01",
    "101.0",
    "\u0661\u0660\u0661",
    " 101",
    "101 ",
    "0x65",
    "1e2",
    "-101",
    "0",
    "",
    "1234567890",
    "9" * 5000,
    # pve-common PVE/JSONSchema.pm pve_verify_vmid: ^[1-9][0-9]{2,8}$ (100 to 999999999, no leading 0)
    "00101",
    "0101",
    "99",
    "1",
]


@pytest.mark.parametrize("vmid", BAD_VMIDS)
def test_a_vmid_is_ascii_digits_in_paths_and_queries(client, vmid):
    for path, params in (
        (f"/v1/vms/{vmid}/check", {"target": "pve2"}),
        (f"/v1/vms/{vmid}/targets", {}),
        ("/v1/decisions", {"vmid": vmid}),
    ):
        answer = client.get(path, params=params, headers=AUTH)
        if vmid in ("", " 101", "101 ") and path.startswith("/v1/vms/") and answer.status_code == 404:
            continue  # no such path: an empty or space-padded segment never reaches the route
        assert answer.status_code == 422, (path, vmid, answer.text)
        assert answer.json()["error"]["field"] == "vmid", (path, vmid)
        # what an operator can act on, never a regular expression
        message = answer.json()["error"]["message"]
        assert "VM id" in message and "pattern" not in message, (path, vmid, message)


@pytest.mark.parametrize("vmid", ["true", "101.0", '"101"', "1e2", "[101]", "null", "99", "0"])
def test_a_vmid_in_a_json_body_is_a_json_integer(client, vmid):
    body = '{"vmid": ' + vmid + ', "target": "pve3"}'
    answer = client.post("/v1/decisions", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "vmid", answer.text
    assert "VM id" in answer.json()["error"]["message"], answer.text


@pytest.mark.parametrize("name", ["pve2\n", "pve2\r\n", "pve2\x00"])
def test_a_node_name_with_a_trailing_newline_is_refused(client, name):
    assert client.get("/v1/vms/101/check", params={"target": name}, headers=AUTH).status_code == 422
    body = {"vmid": 101, "target": "pve3", "source": name}
    answer = client.post("/v1/decisions", json=body, headers=AUTH)
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "source"
    answer = client.post("/v1/decisions", json={"vmid": 101, "target": name}, headers=AUTH)
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "target"


def test_a_source_that_is_no_node_is_404_and_names_the_nodes(client):
    answer = client.post(
        "/v1/decisions", json={"vmid": 101, "target": "pve3", "source": "pve9"}, headers=AUTH
    )
    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    assert (
        error["code"] == "unknown-node" and "no node pve9" in error["message"] and "pve1" in error["message"]
    )


@pytest.mark.integration
def test_a_source_that_is_no_node_is_404_against_proxmox(pve, tmp_path):
    from tests.service.test_service_integration import settings_for

    settings = settings_for(pve, redis_url="memory://", state_dir=str(tmp_path))
    with TestClient(create_app(build_service(settings), settings.bearer_tokens())) as c:
        body = {"vmid": 101, "target": "pve3", "source": "pve9"}
        answer = c.post(
            "/v1/decisions", json=body, headers={"Authorization": f"Bearer {settings.bearer_tokens()[0]}"}
        )
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "unknown-node", answer.text


# --- 405, OpenAPI, 502 in the audit log ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/decisions", "GET, POST"),
        ("DELETE", "/v1/vms/101/check", "GET"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_405_names_the_allowed_methods(client, method, path, allowed):
    answer = client.request(method, path, headers=AUTH)
    assert answer.status_code == 405 and answer.headers["allow"] == allowed
    assert (
        answer.json()["error"]["code"] == "method-not-allowed"
        and allowed in answer.json()["error"]["message"]
    )


def test_openapi_documents_every_parameter_and_error(client):
    schema = client.get("/openapi.json").json()
    check = schema["paths"]["/v1/vms/{vmid}/check"]["get"]
    params = {p["name"]: p for p in check["parameters"]}
    assert set(params) == {"vmid", "target", "target_cluster", "source_cluster"}
    assert params["vmid"]["in"] == "path" and params["target"]["required"] is True
    for path, methods in schema["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in methods.items():
            assert {"200", "401", "413", "422", "502", "503"} <= set(op["responses"]), (method, path)
    targets = {p["name"] for p in schema["paths"]["/v1/vms/{vmid}/targets"]["get"]["parameters"]}
    assert targets == {"vmid", "all_clusters", "source_cluster"}


def test_a_502_decision_is_in_the_audit_log(reader, client):
    reader.error = ProxmoxAuthError("Proxmox refused the token guard@pve!check (401)")
    answer = client.post("/v1/decisions", json={"vmid": 101, "target": "pve3"}, headers=AUTH)
    assert answer.status_code == 502
    reader.error = None
    logged = client.get("/v1/decisions", headers=AUTH).json()["decisions"]
    assert len(logged) == 1
    entry = logged[0]
    assert (entry["vmid"], entry["target"], entry["verdict"], entry["code"], entry["exit"]) == (
        101,
        "pve3",
        "unknown",
        "proxmox-auth",
        5,
    )
    assert "refused the token" in entry["line"]


# --- /readyz -------------------------------------------------------------------------------------


def test_readyz_without_the_token_says_only_the_state(reader, client):
    plain = client.get("/readyz")
    assert plain.status_code == 200 and plain.json() == {"status": "ready"}
    wrong = client.get("/readyz", headers={"Authorization": "Bearer wrong"})
    assert wrong.json() == {"status": "ready"}
    full = client.get("/readyz", headers=AUTH).json()
    assert full["status"] == "ready" and full["proxmox"] == "ok" and full["redis"] == "ok"
    reader.error = ProxmoxAuthError("Proxmox refused the token guard@pve!check at pve1:8006")
    down = client.get("/readyz")
    assert down.status_code == 503 and down.json() == {"status": "not ready"}
    assert "guard@pve!check" in client.get("/readyz", headers=AUTH).json()["proxmox_error"]


def test_readyz_is_cached_so_polling_does_not_call_proxmox_each_time(reader):
    service = make_service(reader, readyz_cache_s=30)
    with TestClient(create_app(service, (TOKEN,)), raise_server_exceptions=False) as c:
        before = reader.calls["nodes"]
        for _ in range(20):
            assert c.get("/readyz").json() == {"status": "ready"}
        assert reader.calls["nodes"] - before == 1


# --- serve at start ------------------------------------------------------------------------------


def _serve_env(pve, port: int, **values: str) -> dict[str, str]:
    env = service_env(pve, port)
    env.pop("MIGRATION_GUARD_REDIS_URL")
    env.update(values)
    return env


@pytest.mark.integration
def test_serve_without_a_redis_url_stops_with_one_line_exit_2(pve):
    done = subprocess.run(
        cli_argv("serve"), env=_serve_env(pve, free_port()), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert (
        lines[0].startswith("migration-guard: MIGRATION_GUARD_REDIS_URL is not set")
        and "memory://" in lines[0]
    )


@pytest.mark.integration
def test_serve_on_memory_and_without_tls_checks_warns_at_start(pve):
    port = free_port()
    env = _serve_env(pve, port, MIGRATION_GUARD_REDIS_URL="memory://", MIGRATION_GUARD_PVE_VERIFY_SSL="false")
    proc = Proc("service", cli_argv("serve", "--log-level", "warning"), env)
    try:
        wait_until(lambda: _up(port), 30, "the service's /healthz", proc)
        log = proc.stderr()
    finally:
        proc.stop()
    assert "WARNING" in log and "MIGRATION_GUARD_REDIS_URL=memory://" in log and "lost at restart" in log
    assert "MIGRATION_GUARD_PVE_VERIFY_SSL=false" in log and "certificate is not checked" in log


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def test_memory_url_is_accepted_and_a_wrong_scheme_is_named():
    from migration_guard.service.settings import load_settings

    assert load_settings(None, redis_url="memory://").redis_url == "memory://"
    with pytest.raises(ConfigError, match="MIGRATION_GUARD_REDIS_URL is wrong"):
        load_settings(None, redis_url="http://127.0.0.1:6379")


# --- durability: the spool ----------------------------------------------------------------------


def _veto(c: TestClient, token: str) -> dict:
    body = {"vmid": 101, "target": "pve3", "source": "pve1"}
    return c.post("/v1/decisions", json=body, headers={"Authorization": f"Bearer {token}"}).json()


@pytest.mark.integration
def test_vetoes_queued_while_redis_is_down_survive_a_restart_and_are_written_once(pve, tmp_path, caplog):
    from tests.service.test_service_integration import settings_for

    port = free_port()
    redis_proc = start_redis(port)
    url = f"redis://127.0.0.1:{port}/0"
    state = tmp_path / "state"
    settings = settings_for(pve, redis_url=url, state_dir=str(state))
    token = settings.bearer_tokens()[0]
    try:
        with TestClient(create_app(build_service(settings), settings.bearer_tokens())) as c:
            assert _veto(c, token)["event_queued"] is False  # Redis up: written at once
            redis_proc.kill()
            redis_proc.wait()
            queued = [_veto(c, token) for _ in range(3)]
            assert all(q["verdict"] == "deny" and q["event_queued"] is True for q in queued)
            assert (state / SPOOL_FILE).is_file()
        # the service restarts while Redis is still down: the spool is read back
        caplog.set_level("INFO", logger="migration_guard.events")
        service = build_service(settings)
        assert service.events.pending == 6  # 3 decisions + 3 veto events
        assert "6 decisions/veto events queued while Redis was down were read from" in caplog.text
        redis_proc = start_redis(port)  # empty: the first veto was lost with the old server
        with TestClient(create_app(service, settings.bearer_tokens())):
            wait_until(lambda: service.events.pending == 0, 30, "the spool to be written to Redis")
        assert not (state / SPOOL_FILE).exists()
        assert "wrote 6 queued decisions/veto events (6 of them from the spool" in caplog.text
        r = redis_sync.Redis(port=port)
        ids = [json.loads(f[b"event"])["id"] for _, f in r.xrange(EVENTS_STREAM)]
        assert sorted(ids) == sorted(q["decision_id"] for q in queued)
        decisions = [json.loads(f[b"decision"])["id"] for _, f in r.xrange(DECISIONS_STREAM)]
        assert sorted(decisions) == sorted(q["decision_id"] for q in queued)
    finally:
        redis_proc.kill()
        redis_proc.wait()


@pytest.mark.integration
def test_a_spool_entry_already_written_is_not_written_again(pve, tmp_path):
    """A crash after Redis took an entry but before the spool was rewritten: the replay skips it."""
    from tests.service.test_service_integration import settings_for

    port = free_port()
    redis_proc = start_redis(port)
    settings = settings_for(pve, redis_url=f"redis://127.0.0.1:{port}/0", state_dir=str(tmp_path))
    try:
        event = {"id": "01TESTEVENT0000000000000001", "vmid": 101, "verdict": "deny"}
        entry = {"stream": EVENTS_STREAM, "id": event["id"], "text": json.dumps(event)}
        for _ in range(2):  # two runs that each replay the same spool
            (tmp_path / SPOOL_FILE).write_text(json.dumps(entry) + "\n")
            service = build_service(settings)
            assert service.events.pending == 1
            assert asyncio.run(_flush_and_close(service)) == 1
        r = redis_sync.Redis(port=port)
        assert [json.loads(f[b"event"])["id"] for _, f in r.xrange(EVENTS_STREAM)] == [event["id"]]
    finally:
        redis_proc.kill()
        redis_proc.wait()


async def _flush_and_close(service) -> int:
    try:
        return await service.events.flush()
    finally:
        await service.close()


def test_a_state_dir_that_cannot_be_written_stops_start_with_one_line(tmp_path):
    from migration_guard.store.events import Spool

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"MIGRATION_GUARD_STATE_DIR=.*cannot write there"):
        Spool(blocker / "state")


def test_the_bot_refuses_the_services_in_process_store_with_one_line():
    from migration_guard_bot.cli import _store
    from migration_guard_bot.settings import BotSettings

    with pytest.raises(ConfigError, match="memory:// is the service's in-process store"):
        _store(BotSettings(redis_url="memory://"))


def test_a_damaged_spool_line_is_skipped_with_a_warning_and_the_rest_replayed(tmp_path, caplog):
    import fakeredis

    from migration_guard.store.events import EventLog, Spool
    from migration_guard.store.redis_store import Store

    good = {"stream": EVENTS_STREAM, "id": "01GOOD", "text": json.dumps({"id": "01GOOD", "vmid": 101})}
    (tmp_path / SPOOL_FILE).write_text("{not json\n" + json.dumps(good) + "\n")
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    caplog.set_level("INFO", logger="migration_guard.events")
    log = EventLog(Store(redis, "embedded"), spool=Spool(tmp_path))
    assert log.pending == 1 and "line 1 is damaged and skipped" in caplog.text

    async def go() -> list:
        assert await log.flush() == 1
        return await redis.xrange(EVENTS_STREAM)

    entries = asyncio.run(go())
    assert [json.loads(f["event"])["id"] for _, f in entries] == ["01GOOD"]
    assert not (tmp_path / SPOOL_FILE).exists()
