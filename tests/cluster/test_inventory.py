"""ClusterReader over proxmoxer speaking real HTTPS to the Proxmox-shaped test server."""

from __future__ import annotations

import time

import pytest

from migration_guard.errors import (
    ProxmoxAuthError,
    ProxmoxError,
    ProxmoxNotFound,
    ProxmoxUnreachable,
    UnknownVmError,
)
from tests.fakes.pve import pve_server, reader_for


@pytest.fixture(scope="module")
def demo():
    with pve_server("demo") as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(demo):
    demo.set_faults()
    yield
    demo.set_faults()


def test_nodes_and_node_facts_over_verified_https(demo):
    reader = reader_for(demo)
    names = [n.name for n in reader.nodes()]
    assert names == ["pve-epyc1", "pve-xeon-bdw", "pve-xeon-csl", "pve-atom1"]
    facts = reader.node_facts("pve-epyc1")
    assert facts.online and facts.cpu is not None
    assert "EPYC" in facts.cpu.model
    assert "avx2" in facts.cpu.flags
    atom = reader.node_facts("pve-atom1")
    assert "avx" not in atom.cpu.flags


def test_verify_ssl_false_also_works(demo):
    assert len(reader_for(demo, verify_ssl=False).nodes()) == 4


def _service_reader(server, verify_ssl: str):
    """A reader as the service makes it: from its settings, which read the environment."""
    from migration_guard.service.clusters import default_endpoint
    from migration_guard.service.clusters import reader_for as service_reader_for
    from tests.support.service_stack import settings_for

    settings = settings_for(server, pve_verify_ssl=verify_ssl, api_tokens="t")
    return service_reader_for(default_endpoint(settings), settings)


def test_proxy_and_ca_environment_read_once_with_requests_meaning(demo, monkeypatch):
    """HTTPS_PROXY / NO_PROXY and REQUESTS_CA_BUNDLE keep their usual meaning, read by the service's
    settings when the reader is made (requests would re-read them on every call)."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = _service_reader(demo, demo.ca_path)._api._store["session"]
    assert session.trust_env is False
    assert session.proxies.get("https") == "http://proxy.example:3128"
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    bypassed = _service_reader(demo, demo.ca_path)
    assert bypassed._api._store["session"].proxies == {}
    assert len(bypassed.nodes()) == 4  # the proxy variable set, the call still goes direct
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", demo.ca_path)
    trusting = _service_reader(demo, "true")
    assert trusting._api._store["session"].auth.verify_ssl == demo.ca_path
    assert len(trusting.nodes()) == 4  # the test server's CA from the environment
    assert reader_for(demo, verify_ssl=True)._api._store["session"].auth.verify_ssl is True  # alone: none


def test_cpu_flags_endpoint_names_the_nodes_with_a_kvm_report(demo):
    """The demo's EPYC and Cascade Lake nodes have a recorded KVM report; the Broadwell and Atom
    nodes have none, so Proxmox names them under no flag and their facts come from cpuinfo."""
    reader = reader_for(demo)
    flags = reader.cluster_cpu_flags()
    assert set(flags) == {"pve-epyc1", "pve-xeon-csl"}
    assert "avx2" in flags["pve-epyc1"] and "avx512f" not in flags["pve-epyc1"]
    assert {"avx512f", "avx512vnni"} <= flags["pve-xeon-csl"] and "rtm" not in flags["pve-xeon-csl"]
    atom = reader.node_facts("pve-atom1", flags.get("pve-atom1"))
    assert atom.flag_source == "cpuinfo" and atom.cpu is not None and "sse4_2" in atom.cpu.flags
    assert "avx" not in atom.cpu.flags  # the Atom's own cpuinfo, not an empty KVM report
    csl = reader.node_facts("pve-xeon-csl", flags.get("pve-xeon-csl"))
    assert csl.flag_source == "qemu-kvm" and "avx512f" in csl.cpu.flags


def test_old_proxmox_answers_501_and_reader_falls_back_quietly(caplog):
    with pve_server("old_proxmox") as server:
        reader = reader_for(server)
        with caplog.at_level("INFO", logger="migration_guard.inventory"):
            assert reader.cluster_cpu_flags() is None
            assert reader.cluster_cpu_flags() is None
        # a 501 is not forever: asked again on every call (the service calls it once per refresh),
        # the fallback logged once, not at every refresh
        assert server.requests().get("/cluster/qemu/cpu-flags", 0) == 2
        assert [r.getMessage() for r in caplog.records].count(
            next(r.getMessage() for r in caplog.records if "cpu-flags" in r.getMessage())
        ) == 1
        assert reader.node_facts("pve-xeon-sky").cpu.flags


def test_cpu_flags_endpoint_appearing_after_an_upgrade_is_used_and_logged(caplog):
    with pve_server("old_proxmox") as server:
        reader = reader_for(server)
        assert reader.cluster_cpu_flags() is None
        server.scenario["pve_version"] = "9.2.11"  # pve-manager upgraded on the cluster's nodes
        with caplog.at_level("INFO", logger="migration_guard.inventory"):
            flags = reader.cluster_cpu_flags()
        assert flags is not None and flags["pve-xeon-sky"]
        assert any("answers /cluster/qemu/cpu-flags now" in r.getMessage() for r in caplog.records)


def test_vms_and_vm_facts(demo):
    reader = reader_for(demo)
    vms = {v.vmid: v for v in reader.vms()}
    assert vms[102].name == "web01" and vms[102].node == "pve-xeon-csl"
    facts = reader.vm_facts("pve-epyc1", 101)
    assert facts.cpu == "host" and facts.running_machine == "pc-q35-9.2+pve0"
    assert reader.vm_facts("pve-xeon-bdw", 107).cpu == ""
    assert reader.find_vm(103).name == "db01"
    by_uuid = reader.find_vm_by_uuid(facts.smbios_uuid)
    assert by_uuid is not None and by_uuid.vmid == 101


def test_unknown_vm_is_not_found(demo):
    with pytest.raises(UnknownVmError) as err:
        reader_for(demo).vm_facts("pve-epyc1", 999)
    assert "VM 999" in str(err.value)


def test_wrong_token_names_token_id_never_secret(demo):
    reader = reader_for(demo, value="not-the-secret-0000")
    with pytest.raises(ProxmoxAuthError) as err:
        reader.nodes()
    msg = str(err.value)
    assert "guard@pve!demo" in msg and "401" in msg
    assert "not-the-secret" not in msg and demo.token["value"] not in msg


def test_server_refusing_token_is_auth_error(demo):
    demo.set_faults(reject_token=True)
    with pytest.raises(ProxmoxAuthError):
        reader_for(demo).nodes()


def test_5xx_is_proxmox_error(demo):
    demo.set_faults(status=500, paths=["/nodes"])
    with pytest.raises(ProxmoxError) as err:
        reader_for(demo).nodes()
    assert not isinstance(err.value, (ProxmoxAuthError, ProxmoxNotFound))
    assert "500" in str(err.value)


def test_slow_proxmox_beyond_timeout_is_unreachable_quickly(demo):
    demo.set_faults(latency_s=2.0)
    started = time.monotonic()
    with pytest.raises(ProxmoxUnreachable) as err:
        reader_for(demo, timeout=0.5).nodes()
    assert time.monotonic() - started < 1.5
    assert demo.host_port in str(err.value)


def test_hanging_proxmox_is_unreachable(demo):
    demo.set_faults(hang=True)
    started = time.monotonic()
    with pytest.raises(ProxmoxUnreachable):
        reader_for(demo, timeout=0.5).nodes()
    assert time.monotonic() - started < 1.5


def test_nobody_listening_is_unreachable():
    with pve_server("demo") as server:
        host_port, token = server.host_port, server.token
    from migration_guard.cluster.reader import ClusterReader

    reader = ClusterReader("x", host_port, token["user"], token["name"], token["value"], False, 1.0)
    with pytest.raises(ProxmoxUnreachable) as err:
        reader.nodes()
    assert host_port in str(err.value)


def test_offline_node_and_missing_flags(demo):
    demo.set_faults(node_offline="pve-atom1", drop_flags="pve-xeon-bdw")
    reader = reader_for(demo)
    online = {n.name: n.online for n in reader.nodes()}
    assert online["pve-atom1"] is False and online["pve-epyc1"] is True
    with pytest.raises(ProxmoxError):
        reader.node_facts("pve-atom1")


def test_migrate_precondition_checked_and_skipped_for_auditor(demo):
    pre = reader_for(demo).migrate_precondition("pve-epyc1", 101, "pve-xeon-csl")
    assert pre.checked
    scenario = dict(demo.scenario)
    scenario["token"] = dict(scenario["token"], privileges=["VM.Audit", "Sys.Audit"])
    with pve_server(scenario) as auditor:
        pre = reader_for(auditor).migrate_precondition("pve-epyc1", 101, "pve-xeon-csl")
    assert not pre.checked and "VM.Migrate" in pre.skipped_reason


def test_precondition_reports_local_disks(demo):
    vm = dict(demo.scenario["vms"][0], local_disks=[{"volid": "local-lvm:vm-101-disk-1", "is_unused": 0}])
    demo.put_vm(vm)
    pre = reader_for(demo).migrate_precondition("pve-epyc1", 101, "pve-xeon-csl")
    assert pre.checked and any("local-lvm:vm-101-disk-1" in d for d in pre.local_disks)
