"""A node's vendor and family from ``/nodes/{node}/status`` of newer pve-common (``cpuinfo.vendor``
= /proc/cpuinfo's vendor_id, ``cpuinfo.family`` = its cpu family; 'unknown' and 0 when not read)."""

from __future__ import annotations

import copy

import pytest

from migration_guard.demo.pve_scenario import cpu_fixture
from migration_guard.engine import verdicts as engine
from migration_guard.engine.cpu_spec import parse_cpu
from migration_guard.engine.hosts import HostCpu, host_from_proxmox, host_from_qemu_flags
from tests.fakes.pve import pve_server, reader_for

# a nested or virtual node often shows a model string that names no vendor
NEUTRAL_MODEL = "Common KVM processor"
NEUTRAL_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 "
    "syscall nx lm constant_tsc nopl cpuid pni cx16 x2apic hypervisor lahf_lm"
)


def test_vendor_and_family_are_read_when_the_status_has_them():
    cpu = host_from_proxmox(
        "pve9", {"model": NEUTRAL_MODEL, "flags": NEUTRAL_FLAGS, "vendor": "AuthenticAMD", "family": 25}
    )
    assert (cpu.vendor, cpu.family) == ("amd", 25)
    cpu = host_from_proxmox(
        "pve9", {"model": NEUTRAL_MODEL, "flags": NEUTRAL_FLAGS, "vendor": "GenuineIntel", "family": "6"}
    )
    assert (cpu.vendor, cpu.family) == ("intel", 6)


@pytest.mark.parametrize("vendor", [None, "unknown", "", 7])
def test_without_a_usable_vendor_the_model_string_and_flags_decide(vendor):
    status = {"model": "AMD EPYC 7702 64-Core Processor", "flags": NEUTRAL_FLAGS, "family": 0}
    if vendor is not None:
        status["vendor"] = vendor
    cpu = host_from_proxmox("pve9", status)
    assert cpu.vendor == "amd" and cpu.family is None  # family 0 = pve-common could not read it
    assert host_from_proxmox("pve9", {"model": NEUTRAL_MODEL, "flags": NEUTRAL_FLAGS}).vendor == "unknown"


def test_host_passthrough_between_vendorless_model_strings_is_judged_with_the_status_vendor():
    def node(name: str, vendor: str | None) -> HostCpu:
        status = {"model": NEUTRAL_MODEL, "flags": NEUTRAL_FLAGS}
        if vendor:
            status["vendor"] = vendor
        return host_from_proxmox(name, status)

    spec = parse_cpu("host")
    assert engine.check_migration(spec, node("a", None), node("b", None)).verdict == "unknown"
    same = engine.check_migration(spec, node("a", "AuthenticAMD"), node("b", "AuthenticAMD"))
    assert same.verdict == "allow"
    crossed = engine.check_migration(spec, node("a", "AuthenticAMD"), node("b", "GenuineIntel"))
    assert crossed.verdict == "deny" and crossed.reasons[0].code == "vendor-mismatch"


def test_family_alone_decides_native_ssbd_only_where_the_family_is_unambiguous():
    zen2 = cpu_fixture("amd-zen2-epyc-7702")
    flags = " ".join(f for f in zen2["flags"] if f not in ("clwb", "wbnoinvd"))
    status = {"model": zen2["model_name"], "flags": flags, "vendor": "AuthenticAMD"}
    spec = parse_cpu("EPYC-Rome-v3")  # needs amd-ssbd
    family_25 = host_from_proxmox("z3", {**status, "family": 25})
    family_23 = host_from_proxmox("z2", {**status, "family": 23})
    assert "amd-ssbd" not in engine.check_runnable(spec, family_25).missing  # every family 0x19 CPU has it
    assert "amd-ssbd" in engine.check_runnable(spec, family_23).missing  # Zen 1 or 2: flags decide (no clwb)


def test_qemu_view_keeps_the_vendor_of_the_status():
    cpu = host_from_qemu_flags("pve9", NEUTRAL_MODEL, ["fpu", "sse2"], "amd", 25)
    assert (cpu.vendor, cpu.family, cpu.flag_source) == ("amd", 25, "qemu-kvm")


@pytest.mark.integration
def test_the_cluster_reader_reads_vendor_and_family_from_the_node_status():
    scenario = copy.deepcopy(
        {
            "cluster": "lab",
            "pve_version": "9.2.1",
            "cpu_flags_endpoint": False,
            "token": {"user": "guard@pve", "name": "t", "value": "secret-value"},
            "nodes": [
                {
                    "name": "pve-new",
                    "cpuinfo_vendor": True,
                    "cpu": {
                        "model": NEUTRAL_MODEL,
                        "flags": NEUTRAL_FLAGS.split(),
                        "vendor_id": "AuthenticAMD",
                        "family": 25,
                    },
                },
                {"name": "pve-old", "cpu": {"model": NEUTRAL_MODEL, "flags": NEUTRAL_FLAGS.split()}},
            ],
            "vms": [],
        }
    )
    with pve_server(scenario) as server:
        reader = reader_for(server)
        new, old = reader.node_facts("pve-new"), reader.node_facts("pve-old")
    assert new.cpu is not None and (new.cpu.vendor, new.cpu.family) == ("amd", 25)
    assert old.cpu is not None and (old.cpu.vendor, old.cpu.family) == ("unknown", None)


def test_a_family_read_later_makes_new_node_facts():
    """A node upgraded to a pve-common that sends the family: its facts are not the old ones."""
    from migration_guard.engine.facts import NodeFacts
    from migration_guard.store.cache import facts_hash

    status = {"model": NEUTRAL_MODEL, "flags": NEUTRAL_FLAGS, "vendor": "AuthenticAMD"}
    before = NodeFacts("lab", "pve9", True, cpu=host_from_proxmox("pve9", status), flag_source="cpuinfo")
    after = NodeFacts(
        "lab", "pve9", True, cpu=host_from_proxmox("pve9", {**status, "family": 25}), flag_source="cpuinfo"
    )
    assert facts_hash(before) != facts_hash(after)
