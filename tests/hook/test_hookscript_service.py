"""The hookscript file, run as Proxmox runs it, against the REAL service: migration_guard.api.app over HTTP
(uvicorn), proxmoxer speaking HTTPS to the Proxmox-shaped test server, real Redis (DB 3)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.hook.test_hookscript import run_hook, write_conf
from tests.support.redis_server import redis_url
from tests.support.service_stack import flushed_redis, hook_confdir, serving, settings_for

pytestmark = pytest.mark.integration
redis = pytest.importorskip("redis")
api = pytest.importorskip("migration_guard.api.app")
service_mod = pytest.importorskip("migration_guard.service.guard")
pve_testserver = pytest.importorskip("migration_guard.demo.pve_server")

SCENARIO = Path(__file__).parents[1] / "fixtures" / "service" / "scenario.json"
CATALOG = Path(__file__).resolve().parents[2] / "shared" / "migration_guard" / "data" / "cpu_models.json"
REDIS_URL = redis_url(3)
TOKEN = "hook-integration-token"


@pytest.fixture(scope="module")
def service():
    if not SCENARIO.exists():
        pytest.skip("tests/fixtures/service/scenario.json is not there")
    scenario = json.loads(SCENARIO.read_text())
    # a `host` VM on the AMD node (pve4): its live migration to an Intel node is a vendor switch
    vm = copy.deepcopy(next(v for v in scenario["vms"] if v["vmid"] == 103))
    vm.update(vmid=403, node="pve4", name="amdhost01")
    scenario["vms"].append(vm)
    patch = pytest.MonkeyPatch()
    if not CATALOG.exists():  # until the packaged catalog lands: the engine tests' inline catalog
        from migration_guard.engine import cpu_models
        from tests.engine.test_engine import MODELS

        inline = cpu_models.load_catalog(json.dumps({"schema": 1, "provenance": {}, "models": MODELS}))
        patch.setattr(cpu_models, "catalog", lambda: inline)
    store = flushed_redis(REDIS_URL)
    pve = pve_testserver.start_server(scenario)
    settings = settings_for(pve, api_tokens=TOKEN, pve_cluster_name="lab", redis_url=REDIS_URL, pve_timeout=2)
    app = api.create_app(service_mod.build_service(settings), settings.bearer_tokens())
    with serving(app) as url:
        yield url
    pve.stop()
    store.flushdb()
    patch.undo()


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    return hook_confdir(tmp_path, TOKEN)


def test_vetoed_host_amd_to_intel_exits_with_the_vendor_code(service, confdir):
    write_conf(confdir, url=service, node="pve1", timeout=10)
    proc, _ = run_hook(confdir, "403", "pre-start", migrated_from="pve4")
    assert proc.returncode == 1, proc.stderr
    head = "migration-guard: blocked migration of VM 403 (amdhost01) from pve4 to pve1: "
    assert proc.stderr.startswith(head)
    assert proc.stderr.count("\n") == 1


def test_missing_features_exit_2(service, confdir):
    write_conf(confdir, url=service, node="pve3", timeout=10)
    proc, _ = run_hook(confdir, "101", "pre-start", migrated_from="pve1")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("migration-guard: blocked migration of VM 101 (web01) from pve1 to pve3: ")
    assert "avx512" in proc.stderr


def test_allowed_migration_exits_0(service, confdir):
    write_conf(confdir, url=service, node="pve2", timeout=10)
    proc, _ = run_hook(confdir, "102", "pre-start", migrated_from="pve1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("\n") == 1 and "blocked" not in proc.stderr


def test_plain_start_makes_no_request(service, confdir):
    write_conf(confdir, url=service, node="pve3", fail="closed")
    before = redis.Redis.from_url(REDIS_URL).dbsize()
    proc, _ = run_hook(confdir, "101", "pre-start", migrated_from="")
    assert proc.returncode == 0 and proc.stderr == ""
    assert redis.Redis.from_url(REDIS_URL).dbsize() == before


def test_wrong_token_is_no_decision(service, confdir):
    write_conf(confdir, url=service, node="pve3", fail="closed")
    (confdir / "token").write_text("wrong\n")
    proc, _ = run_hook(confdir, "101", "pre-start", migrated_from="pve1")
    assert proc.returncode == 5
    assert "the service refused the token (HTTP 401)" in proc.stderr
