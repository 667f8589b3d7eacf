"""The KVM rules where a node's report and what KVM gives a guest part: the ARCH_CAPABILITIES bits
QEMU 10.1+ leaves out of an AMD node's host expansion (rule kvm-arch-capabilities-behind-qemu-10.1)
and the features a migratable ``-cpu host`` never hands a guest (rule host-cpu-is-migratable).

The Zen 5 case is a recorded QEMU 10.1 KVM view (tests/fixtures/kvm/, transcribed from libvirt's
capture, provenance inside) with QEMU's own verdict for 81 models: the engine must agree on each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migration_guard.demo.pve_scenario import cpu_fixture
from migration_guard.engine import offers
from migration_guard.engine import verdicts as engine
from migration_guard.engine.cpu_spec import parse_cpu
from migration_guard.engine.flags import rules
from migration_guard.engine.hosts import HostCpu, host_from_json

ZEN5 = Path(__file__).parents[1] / "fixtures" / "kvm" / "amd-zen5-ryzen-9-9950x-qemu-10.1.json"


def zen5_record() -> dict:
    return json.loads(ZEN5.read_text())


def zen5(flags: frozenset[str] | None = None, vendor: str = "amd") -> HostCpu:
    rec = zen5_record()
    return HostCpu(
        name=rec["node"],
        vendor=vendor,  # type: ignore[arg-type]
        model=rec["model_name"],
        flags=frozenset(rec["features"]) if flags is None else flags,
        flag_source="qemu-kvm",
    )


def cpuinfo_host(ref: str, name: str, drop: tuple[str, ...] = ()) -> HostCpu:
    fx = dict(cpu_fixture(ref))
    fx["flags"] = [f for f in fx["flags"] if f not in drop]
    fx["name"] = name
    return host_from_json(fx, name)


# --- QEMU 10.1 on AMD: ARCH_CAPABILITIES ----------------------------------------------------------


def test_the_recorded_expansion_really_hides_arch_capabilities():
    features = set(zen5_record()["features"])
    assert not features & {"arch-capabilities", "rdctl-no", "mds-no", "skip-l1dfl-vmentry", "pschange-mc-no"}


@pytest.mark.parametrize("model", sorted(zen5_record()["unavailable"]))
def test_zen5_kvm_view_agrees_with_qemu_10_1_on_every_recorded_model(model):
    expected = sorted({engine.display_name(f) for f in zen5_record()["unavailable"][model]})
    verdict = engine.check_runnable(parse_cpu(model), zen5())
    assert list(verdict.missing) == expected, verdict.reasons
    assert verdict.runnable is (not expected)


def test_denverton_v2_migrates_from_an_intel_node_onto_the_zen5_node():
    source = cpuinfo_host("intel-denverton-atom-c3758", "pve-atom")
    verdict = engine.check_migration(parse_cpu("Denverton-v2"), source, zen5())
    assert verdict.verdict == "allow", verdict.reasons
    assert [r.code for r in verdict.reasons] == ["vendor-forced"]  # an Intel CPU on an AMD node


def test_the_rule_gives_bits_only_to_a_model_of_the_other_vendor():
    # a generic type takes the node's vendor (AMD): QEMU hides the bits from it too
    from migration_guard.engine.cpu_spec import parse_custom_models

    custom = parse_custom_models("cpu-model: v2rdcl\n    reported-model x86-64-v2\n    flags +rdctl-no\n")
    verdict = engine.check_runnable(parse_cpu("custom-v2rdcl", custom), zen5())
    assert not verdict.runnable and verdict.missing == ("rdctl-no",)
    off = engine.offer(zen5())
    assert off.for_model(None) == off.bits and off.for_model("amd") == off.bits
    assert off.for_model("intel") != off.bits


def test_taa_no_and_host_only_bits_stay_missing_on_amd():
    verdict = engine.check_runnable(parse_cpu("Cooperlake-v1"), zen5())
    assert {"taa-no", "ibrs-all"} <= set(verdict.missing)
    assert "rdctl-no" not in verdict.missing and "mds-no" not in verdict.missing


def test_ssb_no_follows_amd_no_ssb_of_the_same_view():
    # KVM sets SSB_NO and AMD_SSB_NO under one condition (no spec_store_bypass bug)
    pairs = dict(rules().hidden_arch_capabilities.offered_with)
    assert pairs["ssb-no"] == ("amd-no-ssb",)
    with_ssb_no = engine.offer(zen5(frozenset(zen5_record()["features"]) | {"amd-no-ssb"}))
    without = engine.offer(zen5())
    bit = offers.known_bit("ssb-no")
    assert bit and with_ssb_no.for_model("intel") & bit and not without.for_model("intel") & bit


@pytest.mark.parametrize(
    "case",
    ["an Intel node", "an AMD node whose QEMU still reports arch-capabilities (before 10.1)"],
)
def test_the_rule_does_not_apply_where_the_view_is_exact(case):
    flags = set(zen5_record()["features"])
    if case == "an Intel node":
        host = zen5(frozenset(flags), vendor="intel")
    else:
        host = zen5(frozenset(flags | {"arch-capabilities"}))
    verdict = engine.check_runnable(parse_cpu("Denverton-v2"), host)
    assert not verdict.runnable and verdict.missing == ("rdctl-no",)


def test_the_rules_are_named_in_the_data_with_their_sources():
    sources = rules().rule_sources or {}
    assert "kvm_get_arch_capabilities" in sources["kvm-arch-capabilities-behind-qemu-10.1"]
    assert "x86_cpu_get_supported_feature_word" in sources["kvm-arch-capabilities-behind-qemu-10.1"]
    assert "unmigratable_flags" in sources["host-cpu-is-migratable"]
    assert rules().unmigratable == frozenset({"invtsc"})


# --- cpu: host is migratable: invtsc never reaches the guest ---------------------------------------


def test_host_passthrough_between_nodes_differing_only_in_invtsc_is_allowed():
    source = cpuinfo_host("intel-skylake-sp-gold-6130", "pve1")
    target = cpuinfo_host("intel-skylake-sp-gold-6130", "pve2", drop=("nonstop_tsc",))
    verdict = engine.check_migration(parse_cpu("host"), source, target)
    assert verdict.verdict == "allow", verdict.reasons
    assert verdict.reasons == ()  # same CPU model, same guest CPU: no caution either


def test_host_passthrough_still_denies_a_real_feature_difference():
    source = cpuinfo_host("intel-skylake-sp-gold-6130", "pve1")
    target = cpuinfo_host("intel-skylake-sp-gold-6130", "pve2", drop=("nonstop_tsc", "avx512f"))
    verdict = engine.check_migration(parse_cpu("host"), source, target)
    assert verdict.verdict == "deny" and verdict.missing == ("avx512f",)


def test_host_passthrough_qemu_views_differing_only_in_invtsc_is_allowed():
    flags = frozenset(zen5_record()["features"])
    source = HostCpu("a", "amd", "Zen 5", flags | {"invtsc"}, flag_source="qemu-kvm")
    target = HostCpu("b", "amd", "Zen 5", flags, flag_source="qemu-kvm")
    assert engine.check_migration(parse_cpu("host"), source, target).verdict == "allow"


def test_a_named_type_that_needs_invtsc_is_still_judged_on_it():
    # only a passthrough guest loses invtsc; a custom model asking for it needs it on the node
    target = cpuinfo_host("intel-skylake-sp-gold-6130", "pve2", drop=("nonstop_tsc",))
    models = "cpu-model: tsc\n    reported-model Skylake-Server-v4\n    flags +invtsc\n"
    from migration_guard.engine.cpu_spec import parse_custom_models

    custom = parse_custom_models(models)
    spec = parse_cpu("custom-tsc", custom)
    verdict = engine.check_runnable(spec, target)
    assert not verdict.runnable and "invtsc" in verdict.missing
