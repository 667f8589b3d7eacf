"""The flag-name normaliser and the KVM rules data (shared/migration_guard/engine/flags.py,
shared/migration_guard/data/flag_rules.json)."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from migration_guard.engine.flags import canonical, canonical_set, linux_name, rule_source, rules


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("sse4.2", "sse4.2"),
        ("sse4_2", "sse4.2"),
        ("sse4-2", "sse4.2"),
        ("SSE4_2", "sse4.2"),
        ("sse4_1", "sse4.1"),
        ("sse4-1", "sse4.1"),
        ("sse3", "pni"),
        ("pni", "pni"),
        ("lahf_lm", "lahf-lm"),
        ("lahf-lm", "lahf-lm"),
        ("i64", "lm"),
        ("xd", "nx"),
        ("ffxsr", "fxsr-opt"),
        ("fxsr_opt", "fxsr-opt"),
        ("pclmuldq", "pclmulqdq"),
        ("tsc_deadline_timer", "tsc-deadline"),
        ("tsc-deadline", "tsc-deadline"),
        ("avx512_vnni", "avx512vnni"),
        ("avx512_vbmi2", "avx512vbmi2"),
        ("avx512_bitalg", "avx512bitalg"),
        ("cr8_legacy", "cr8legacy"),
        ("tsxldtrk", "tsx-ldtrk"),
        ("pausefilter", "pause-filter"),
        ("md_clear", "md-clear"),
        ("kvm_pv_unhalt", "kvm-pv-unhalt"),
        ("rng", "xstore"),
        ("ace", "xcrypt"),
        (" avx2 ", "avx2"),
    ],
)
def test_canonical_joins_qemu_aliases_and_linux_names(spelling: str, expected: str) -> None:
    assert canonical(spelling) == expected


@pytest.mark.parametrize(
    ("feature", "linux"),
    [
        ("sse4.2", "sse4_2"),
        ("sse4.1", "sse4_1"),
        ("pni", "pni"),
        ("lahf-lm", "lahf_lm"),
        ("fxsr-opt", "fxsr_opt"),
        ("tsc-deadline", "tsc_deadline_timer"),
        ("avx512vnni", "avx512_vnni"),
        ("avx512vbmi", "avx512vbmi"),
        ("avx512vbmi2", "avx512_vbmi2"),
        ("avx512-vpopcntdq", "avx512_vpopcntdq"),
        ("sha-ni", "sha_ni"),
        ("cr8legacy", "cr8_legacy"),
        ("tsx-ldtrk", "tsxldtrk"),
        ("ds", "dts"),
        ("pdpe1gb", "pdpe1gb"),
        ("md-clear", "md_clear"),
        ("sse3", "pni"),
    ],
)
def test_linux_name_is_what_proc_cpuinfo_prints(feature: str, linux: str) -> None:
    assert linux_name(feature) == linux


def test_linux_names_round_trip_through_canonical() -> None:
    for feature in [
        "sse4.2",
        "lahf-lm",
        "tsc-deadline",
        "avx512vnni",
        "cr8legacy",
        "tsx-ldtrk",
        "pause-filter",
        "avx512-bf16",
        "amx-tile",
        "nrip-save",
        "v-vmsave-vmload",
    ]:
        assert canonical(linux_name(feature)) == feature


def test_canonical_set_drops_blanks() -> None:
    assert canonical_set(["sse4_2", "", "  ", "SSE3"]) == {"sse4.2", "pni"}


def test_hypervisor_supplied_features_from_the_kvm_facts() -> None:
    supplied = rules().hypervisor_supplied
    for feature in [
        "hypervisor",
        "x2apic",
        "tsc-deadline",
        "arat",
        "topoext",
        "tsc-adjust",
        "arch-capabilities",
        "kvm-pv-unhalt",
        "kvm-pv-eoi",
        "kvmclock",
        "mtrr",
        "pat",
        "mce",
        "mca",
    ]:
        assert feature in supplied, feature


def test_hidden_features_name_the_flags_the_host_shows_instead() -> None:
    needs = rules().host_needs
    assert set(needs["spec-ctrl"].flags) == {"ibrs", "ibpb"}
    assert needs["invtsc"].flags == ("constant_tsc", "nonstop_tsc")
    assert needs["umip"].supplied_on == "intel"
    assert needs["ssbd"].amd_native_ssbd and needs["amd-ssbd"].amd_native_ssbd


def test_msr_features_come_from_bugs() -> None:
    derived = rules().bug_derived
    assert derived["mds-no"].absent_bugs == ("mds",)
    assert derived["rdctl-no"].absent_bugs == ("cpu_meltdown",)
    assert derived["taa-no"].flags == ("rtm",)


def test_never_offered_and_vm_flag_set() -> None:
    r = rules()
    assert {"monitor", "acpi", "pks", "core-capability", "split-lock-detect", "intel-pt"} <= r.never_offered
    assert r.vm_flags_allowed == {
        "nested-virt",
        "md-clear",
        "pcid",
        "spec-ctrl",
        "ssbd",
        "ibpb",
        "virt-ssbd",
        "amd-ssbd",
        "amd-no-ssb",
        "pdpe1gb",
        "hv-tlbflush",
        "hv-evmcs",
        "aes",
    }
    assert r.nested_virt == {"intel": "vmx", "amd": "svm"}


def test_every_rule_in_the_data_file_has_a_one_line_source() -> None:
    data = json.loads(resources.files("migration_guard").joinpath("data/flag_rules.json").read_text())
    for section in (
        "aliases",
        "linux_names",
        "hypervisor_supplied",
        "host_needs",
        "bug_derived",
        "never_offered",
    ):
        for name, entry in data[section].items():
            if name.startswith("_"):
                continue
            source = entry if isinstance(entry, str) else entry.get("source")
            assert isinstance(source, str) and source.strip(), f"{section}.{name} has no source"
            assert "\n" not in source
    for section in ("vm_flags_allowed", "nested_virt", "amd_native_ssbd", "qemu_features_extra"):
        assert data[section]["source"].strip()


def test_rule_source_names_where_a_rule_comes_from() -> None:
    assert "kvm.c" in (rule_source("hypervisor") or "")
    assert rule_source("sse4_2") is None


def test_paravirt_and_hyperv_prefixes_are_supplied_but_hv_evmcs_needs_vmx() -> None:
    r = rules()
    assert r.is_hypervisor_supplied("kvm-pv-ipi") and r.is_hypervisor_supplied("hv-relaxed")
    assert not r.is_hypervisor_supplied("hv-evmcs") and not r.is_hypervisor_supplied("avx2")


def test_vmx_and_svm_sub_features_are_nested_only() -> None:
    r = rules()
    assert r.is_nested_only("vmx-ept") and r.is_nested_only("npt") and r.is_nested_only("nrip-save")
    assert not r.is_nested_only("vmx") and not r.is_nested_only("svm")
