"""End to end, the hookscript and the API -> the real service (HTTP, Redis DB 11) -> proxmoxer -> the
Proxmox-shaped test server: VMs with custom CPU models judged from /cluster/qemu/custom-cpu-models
(or a cpu-models.conf copy where Proxmox has no such endpoint), the physical address width
(phys-bits) of a guest against its target, and the cluster's custom model computed and created."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from migration_guard.engine.cpu_spec import parse_custom_models
from tests.hook.test_hookscript import run_hook, write_conf
from tests.support.redis_server import redis_url
from tests.support.service_stack import flushed_redis, hook_confdir, serving, settings_for

pytestmark = pytest.mark.integration
pytest.importorskip("redis")
api = pytest.importorskip("migration_guard.api.app")
service_mod = pytest.importorskip("migration_guard.service.guard")
pve_testserver = pytest.importorskip("migration_guard.demo.pve_server")

REDIS_URL = redis_url(11)
TOKEN = "custom-models-e2e-token"
MODELS = [
    {"name": "avx2-base", "reported-model": "Haswell-noTSX", "flags": "+rdseed;+adx"},
    {"name": "wide46", "reported-model": "kvm64", "phys-bits": "46"},
]
CONF = "".join(
    f"cpu-model: {m['name']}\n" + "".join(f"\t{k} {v}\n" for k, v in m.items() if k != "name") + "\n"
    for m in MODELS
)


def _vm(vmid: int, node: str, cpu: str, status: str = "running") -> dict:
    return {
        "vmid": vmid,
        "node": node,
        "name": f"vm{vmid}",
        "status": status,
        "config": {"cpu": cpu, "cores": 2, "memory": "2048", "ostype": "l26"},
    }


def scenario(pve_version: str = "9.2.1") -> dict:
    cpuinfo_only: dict = {"qemu_flags": []}  # judged on /proc/cpuinfo (no recorded KVM view)
    return {
        "_provenance": "test cluster of tests/system/test_custom_models_e2e.py; CPUs from "
        "shared/migration_guard/data/cpus (address widths: their address_sizes)",
        "cluster": "lab",
        "pve_version": pve_version,
        "cpu_flags_endpoint": True,
        "token": {
            "user": "guard@pve",
            "name": "e2e",
            "value": "custom-models-secret",
            "privileges": ["VM.Audit", "Sys.Audit", "VM.Migrate", "Mapping.Audit", "Mapping.Modify"],
        },
        "custom_cpu_models": [dict(m) for m in MODELS],
        "nodes": [
            {"name": "pve-csl", "cpu_ref": "intel-cascadelake-sp-gold-6230", **cpuinfo_only},  # 46 bits
            {"name": "pve-i7", "cpu_ref": "intel-kabylake-r-core-i7-8650u", **cpuinfo_only},  # 39 bits
            {"name": "pve-atom", "cpu_ref": "intel-denverton-atom-c3758", **cpuinfo_only},  # not recorded
            {"name": "pve-bdw", "cpu_ref": "intel-broadwell-ep-xeon-e5-2680v4", **cpuinfo_only},  # 46 bits
        ],
        "vms": [
            _vm(201, "pve-csl", "custom-avx2-base"),
            _vm(202, "pve-csl", "x86-64-v2-AES,phys-bits=host"),
            _vm(203, "pve-bdw", "custom-wide46"),
            _vm(204, "pve-csl", "custom-nowhere"),
            _vm(205, "pve-csl", "x86-64-v3"),
            _vm(206, "pve-csl", "custom-csl-i7"),  # defined by the apply test
        ],
    }


@pytest.fixture(scope="module")
def stack():
    store = flushed_redis(REDIS_URL)
    pve = pve_testserver.start_server(scenario())
    settings = settings_for(
        pve, api_tokens=TOKEN, pve_cluster_name="lab", redis_url=REDIS_URL, pve_timeout=3, cache_vm_ttl=0
    )
    app = api.create_app(service_mod.build_service(settings), settings.bearer_tokens())
    with serving(app) as url:
        yield url, pve
    pve.stop()
    store.flushdb()


@pytest.fixture
def service(stack) -> str:
    return stack[0]


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    return hook_confdir(tmp_path, TOKEN)


def hook(service: str, confdir: Path, vmid: int, source: str, target: str) -> tuple[int, str]:
    write_conf(confdir, url=service, node=target, timeout=10, fail="closed")
    proc, _ = run_hook(confdir, str(vmid), "pre-start", migrated_from=source)
    return proc.returncode, proc.stderr


def get(url: str, path: str, **params: str) -> httpx.Response:
    return httpx.get(f"{url}{path}", params=params, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20)


def test_a_custom_model_vm_is_allowed_where_its_model_runs(service, confdir):
    code, line = hook(service, confdir, 201, "pve-csl", "pve-i7")
    assert code == 0, line
    assert line.startswith("migration-guard: allowed migration of VM 201 (vm201) from pve-csl to pve-i7")


def test_a_custom_model_vm_is_denied_where_its_model_lacks_features(service, confdir):
    code, line = hook(service, confdir, 201, "pve-csl", "pve-atom")
    assert code == 2, line
    body = get(service, "/v1/vms/201/check", target="pve-atom").json()
    assert body["verdict"] == "deny" and body["model"] == "custom-avx2-base"
    assert {"avx", "avx2", "adx"} <= set(body["missing"])  # the reported model's and the +flags
    assert [r["code"] for r in body["reasons"]][0] == "missing-flags"


def test_a_custom_model_the_cluster_does_not_define_is_not_judged(service):
    body = get(service, "/v1/vms/204/check", target="pve-i7").json()
    assert body["verdict"] == "unknown"
    assert body["reasons"][0]["code"] == "unknown-model"
    assert "nowhere" in body["reasons"][0]["message"]


def test_phys_bits_host_from_46_to_39_bits_is_denied(service, confdir):
    code, line = hook(service, confdir, 202, "pve-csl", "pve-i7")
    assert code == 4, line
    assert "the guest addresses 46 bits of physical memory (phys-bits=host on pve-csl)" in line
    assert "pve-i7 offers 39" in line
    body = get(service, "/v1/vms/202/check", target="pve-i7").json()
    assert (body["verdict"], body["reasons"][0]["code"]) == ("deny", "phys-bits")


def test_a_custom_model_phys_bits_wider_than_the_target_is_denied(service):
    body = get(service, "/v1/vms/203/check", target="pve-i7").json()
    assert body["verdict"] == "deny"
    assert "phys-bits" in [r["code"] for r in body["reasons"]]
    allowed = get(service, "/v1/vms/203/check", target="pve-csl").json()
    assert allowed["verdict"] == "allow", allowed["reasons"]


def test_an_unknown_width_is_a_notice_not_a_veto(service, confdir):
    code, line = hook(service, confdir, 202, "pve-csl", "pve-atom")
    assert code == 0, line
    body = get(service, "/v1/vms/202/check", target="pve-atom").json()
    assert body["verdict"] == "allow"
    notice = [r for r in body["reasons"] if r["code"] == "phys-bits-unknown"]
    assert notice and "physical address width of pve-atom is unknown" in notice[0]["message"]


def test_the_custom_model_lists_only_flags_every_node_offers_and_gains(service):
    body = get(service, "/v1/cluster/custom-model", nodes="pve-csl,pve-i7,pve-bdw").json()
    assert body["nodes"] == ["pve-csl", "pve-i7", "pve-bdw"]
    assert body["phys_bits"] == 39  # the i7's width
    assert "invtsc" in {x["flag"] for x in body["left_out"]} and "invtsc" not in body["flags"]
    model = parse_custom_models(body["section"])["cluster-baseline"]
    assert model.reported_model == body["reported_model"] and model.phys_bits == "39"
    assert [f for f, on in model.flags if on] == body["flags"]
    gainers = {vm["vmid"]: vm for vm in body["vms_that_gain"]}
    assert 205 in gainers and 201 not in gainers  # x86-64-v3 gains; a custom model is left alone


def test_applying_the_model_creates_it_and_its_vms_are_judged(stack):
    service, pve = stack
    before = get(service, "/v1/vms/206/check", target="pve-i7").json()
    assert (before["verdict"], before["reasons"][0]["code"]) == ("unknown", "unknown-model")
    made = httpx.post(
        f"{service}/v1/cluster/custom-model",
        json={"nodes": ["pve-csl", "pve-i7"], "name": "csl-i7"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=20,
    )
    assert made.status_code == 200, made.text
    assert made.json()["created"] is True
    names = [m["name"] for m in pve.state.scenario["custom_cpu_models"]]
    assert "csl-i7" in names  # written through POST /cluster/qemu/custom-cpu-models
    again = httpx.post(
        f"{service}/v1/cluster/custom-model",
        json={"nodes": ["pve-csl", "pve-i7"], "name": "csl-i7"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=20,
    )
    assert again.status_code == 422 and "already has a custom CPU model csl-i7" in again.text
    deadline = time.monotonic() + 10  # the VM's facts read before the creation may serve a moment
    while (body := get(service, "/v1/vms/206/check", target="pve-i7").json())["verdict"] == "unknown":
        assert time.monotonic() < deadline, body["reasons"]
        time.sleep(0.2)
    assert body["verdict"] == "allow", body["reasons"]
    denied = get(service, "/v1/vms/206/check", target="pve-atom").json()
    assert denied["verdict"] == "deny"


def test_without_the_endpoint_the_models_come_from_the_settings_file(tmp_path):
    conf = tmp_path / "cpu-models.conf"
    conf.write_text(CONF)
    pve = pve_testserver.start_server(scenario(pve_version="9.1.10"))  # before the endpoint: 501
    try:
        settings = settings_for(
            pve, api_tokens=TOKEN, redis_url="memory://", pve_timeout=3, cpu_models_conf=str(conf)
        )
        app = api.create_app(service_mod.build_service(settings), settings.bearer_tokens())
        with serving(app) as url:
            allowed = get(url, "/v1/vms/201/check", target="pve-i7").json()
            denied = get(url, "/v1/vms/201/check", target="pve-atom").json()
    finally:
        pve.stop()
    assert allowed["verdict"] == "allow", allowed["reasons"]
    assert denied["verdict"] == "deny" and denied["model"] == "custom-avx2-base"


def test_the_cluster_view_shows_each_nodes_width_and_custom_vms_are_at_risk(service):
    nodes = {n["name"]: n for n in get(service, "/v1/cluster").json()["nodes"]}
    assert (nodes["pve-csl"]["phys_bits"], nodes["pve-i7"]["phys_bits"]) == (46, 39)
    assert nodes["pve-atom"]["phys_bits"] is None  # no recorded dump of the Atom prints its width
    risky = {v["vmid"]: v for v in get(service, "/v1/cluster/recommendation").json()["vms_at_risk"]}
    assert "pve-atom" in {c["node"] for c in risky[201]["cannot_run_on"]}  # custom-avx2-base needs AVX2
