"""End to end, the hookscript run as Proxmox runs it -> the real service (HTTP, Redis DB 5) ->
proxmoxer -> the Proxmox-shaped test server, for the cases where what a node reports and what KVM
gives a guest part: QEMU 10.1 on a Zen 5 node (its cpu-flags view hides ARCH_CAPABILITIES), two
nodes differing only in invtsc under ``cpu: host``, a nested node, the vendor from newer
pve-common's node status, and HA retrying a vetoed migration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migration_guard.demo.pve_server import cpu_fixture
from tests.hook.test_hookscript import run_hook, write_conf
from tests.support.redis_server import redis_url
from tests.support.service_stack import flushed_redis, hook_confdir, serving, settings_for

pytestmark = pytest.mark.integration
redis = pytest.importorskip("redis")
api = pytest.importorskip("migration_guard.api.app")
service_mod = pytest.importorskip("migration_guard.service.guard")
pve_testserver = pytest.importorskip("migration_guard.demo.pve_server")

REDIS_URL = redis_url(5)
TOKEN = "kvm-view-e2e-token"
ZEN5_FILE = Path(__file__).parents[1] / "fixtures" / "kvm" / "amd-zen5-ryzen-9-9950x-qemu-10.1.json"
ZEN5 = json.loads(ZEN5_FILE.read_text())
#: one /proc/cpuinfo flags line whose words name no vendor
NEUTRAL_LINE = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 "
    "syscall nx lm constant_tsc nopl cpuid pni cx16 x2apic hypervisor lahf_lm"
)
NEUTRAL = NEUTRAL_LINE.split()


def _cpu(ref: str, drop: tuple[str, ...] = ()) -> dict:
    fx = cpu_fixture(ref)
    return {
        "model": fx["model_name"],
        "flags": [f for f in fx["flags"] if f not in drop],
        "vendor_id": fx.get("vendor_id"),
        "bugs": fx.get("bugs"),
        "family": fx.get("cpu_family"),
        "model_number": fx.get("model"),
    }


def _vm(vmid: int, node: str, cpu: str) -> dict:
    return {
        "vmid": vmid,
        "node": node,
        "name": f"vm{vmid}",
        "status": "running",
        "config": {"cpu": cpu, "cores": 2, "memory": "2048", "ostype": "l26"},
    }


def scenario() -> dict:
    # qemu_flags [] = the node is in no row of /cluster/qemu/cpu-flags: judged on its cpuinfo
    cpuinfo_only: dict = {"qemu_flags": []}
    return {
        "_provenance": "test cluster of tests/system/test_kvm_view_e2e.py; CPUs from "
        "shared/migration_guard/data/cpus and "
        "tests/fixtures/kvm (a recorded QEMU 10.1 KVM view of a Ryzen 9 9950X)",
        "cluster": "lab",
        "pve_version": "9.2.1",
        "cpu_flags_endpoint": True,
        "token": {"user": "guard@pve", "name": "e2e", "value": "kvm-view-secret"},
        "nodes": [
            {
                "name": "pve-zen5",
                "qemu_version": "10.1.2",
                "cpuinfo_vendor": True,
                "qemu_flags": ZEN5["features"],
                "cpu": {
                    "model": ZEN5["model_name"],
                    "flags": NEUTRAL,
                    "vendor_id": "AuthenticAMD",
                    "family": ZEN5["family"],
                },
            },
            {"name": "pve-atom", "cpu_ref": "intel-denverton-atom-c3758", **cpuinfo_only},
            {"name": "pve-sky1", "cpu_ref": "intel-skylake-sp-gold-6130", **cpuinfo_only},
            {
                "name": "pve-sky2",
                "cpu": _cpu("intel-skylake-sp-gold-6130", drop=("nonstop_tsc",)),
                **cpuinfo_only,
            },
            {"name": "pve-epyc", "cpu_ref": "amd-zen2-epyc-7702", **cpuinfo_only},
            {"name": "pve-nested", "cpu_ref": "amd-zen3-milan-x-epyc-7v73x", **cpuinfo_only},
            *(
                {
                    "name": name,
                    "cpuinfo_vendor": True,
                    "cpu": {
                        "model": "Common KVM processor",
                        "flags": NEUTRAL,
                        "vendor_id": "AuthenticAMD",
                        "family": 25,
                    },
                    **cpuinfo_only,
                }
                for name in ("pve-new1", "pve-new2")
            ),
        ],
        "vms": [
            _vm(201, "pve-atom", "Denverton-v2"),
            _vm(202, "pve-sky1", "host"),
            _vm(203, "pve-epyc", "EPYC-Rome"),
            _vm(204, "pve-new1", "host"),
            _vm(205, "pve-sky1", "Skylake-Server-v4"),
        ],
    }


@pytest.fixture(scope="module")
def service():
    store = flushed_redis(REDIS_URL)
    pve = pve_testserver.start_server(scenario())
    settings = settings_for(pve, api_tokens=TOKEN, pve_cluster_name="lab", redis_url=REDIS_URL, pve_timeout=2)
    app = api.create_app(service_mod.build_service(settings), settings.bearer_tokens())
    with serving(app) as url:
        yield url
    pve.stop()
    store.flushdb()


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    return hook_confdir(tmp_path, TOKEN)


def hook(service: str, confdir: Path, vmid: int, source: str, target: str):
    write_conf(confdir, url=service, node=target, timeout=10, fail="closed")
    proc, _ = run_hook(confdir, str(vmid), "pre-start", migrated_from=source)
    return proc.returncode, proc.stderr


def test_denverton_v2_onto_a_zen5_node_with_qemu_10_1_is_allowed(service, confdir):
    code, line = hook(service, confdir, 201, "pve-atom", "pve-zen5")
    assert code == 0, line
    assert line.startswith("migration-guard: allowed migration of VM 201 (vm201) from pve-atom to pve-zen5")


def test_cpu_host_between_nodes_differing_only_in_invtsc_is_allowed(service, confdir):
    code, line = hook(service, confdir, 202, "pve-sky1", "pve-sky2")
    assert code == 0, line
    assert line.startswith("migration-guard: allowed migration of VM 202 (vm202) from pve-sky1 to pve-sky2")


def test_a_veto_onto_a_nested_node_says_the_node_is_a_vm(service, confdir):
    code, line = hook(service, confdir, 203, "pve-epyc", "pve-nested")
    assert code == 2, line  # the Azure guest's cpuinfo lacks some of EPYC-Rome's features
    head = "migration-guard: blocked migration of VM 203 (vm203) from pve-epyc to pve-nested: "
    assert line.startswith(head)
    assert line.index("lacks") < line.index("note: pve-nested is itself a virtual machine")
    assert "note: pve-nested is itself a virtual machine" in line and "may offer far less" in line


def test_cpu_host_between_nodes_whose_vendor_only_the_status_names_is_judged(service, confdir):
    code, line = hook(service, confdir, 204, "pve-new1", "pve-new2")
    assert code == 0, line
    assert line.startswith("migration-guard: allowed migration of VM 204 (vm204) from pve-new1 to pve-new2")


def test_ha_retrying_a_veto_is_told_what_to_do_and_counted(service, confdir):
    lines = [hook(service, confdir, 205, "pve-sky1", "pve-atom") for _ in range(3)]
    assert [code for code, _ in lines] == [2, 2, 2]
    first, _, third = (line for _, line in lines)
    assert first.startswith("migration-guard: blocked migration of VM 205 (vm205) from pve-sky1 to pve-atom:")
    assert "times since" not in first
    assert "; blocked 3 times since " in third
    assert "HA retries until pve-sky1 leaves maintenance or the CPU type changes" in third
    assert "migrate it by hand to a node that runs it" in third
    assert third.count("\n") == 1 and not third.rstrip().endswith("...")  # whole, on one line
    events = redis.Redis.from_url(REDIS_URL, decode_responses=True).xrange("migration-guard:events")
    repeats = [
        json.loads(f["event"]).get("repeat", {}).get("count")
        for _, f in events
        if json.loads(f["event"])["vmid"] == 205
    ]
    assert repeats == [1, 2, 3]


def test_the_cluster_view_names_the_nested_node_and_reads_the_kvm_view(service):
    import httpx

    body = httpx.get(f"{service}/v1/cluster", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
    nodes = {n["name"]: n for n in body["nodes"]}
    assert "pve-nested is itself a virtual machine" in nodes["pve-nested"]["note"]
    assert "note" not in nodes["pve-epyc"] and "note" not in nodes["pve-zen5"]
    assert (nodes["pve-zen5"]["flag_source"], nodes["pve-zen5"]["vendor"]) == ("qemu-kvm", "amd")
    assert (nodes["pve-new1"]["flag_source"], nodes["pve-new1"]["vendor"]) == ("cpuinfo", "amd")
