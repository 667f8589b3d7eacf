"""The compatibility engine (shared/migration_guard/engine/verdicts.py): runnable, migration and
recommendation verdicts.

Most tests use a small inline catalog; the seed's cases run against the packaged catalog
(shared/migration_guard/data/cpu_models.json) and the real CPU fixtures (shared/migration_guard/data/cpus,
plus the optional folder
MIGRATION_GUARD_TEST_EXTRA_CPUS names)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from migration_guard.engine import cpu_models
from migration_guard.engine import verdicts as engine
from migration_guard.engine.cpu_models import load_catalog
from migration_guard.engine.cpu_spec import CpuSpec, parse_cpu, parse_custom_models
from migration_guard.engine.hosts import HostCpu, host_from_json
from migration_guard.engine.verdicts import (
    Blocked,
    check_migration,
    check_runnable,
    recommend,
    runnable_matrix,
)
from tests.support.extra_cpus import extra_cpus_dir

REPO = Path(__file__).resolve().parents[2]

# the same name in QEMU's models and in Linux's /proc/cpuinfo flags
X86_64 = [
    "fpu",
    "de",
    "pse",
    "tsc",
    "msr",
    "pae",
    "cx8",
    "apic",
    "sep",
    "pge",
    "cmov",
    "pse36",
    "clflush",
    "mmx",
    "fxsr",
    "sse",
    "sse2",
    "syscall",
    "nx",
    "lm",
]
BASE = [
    *X86_64,
    "lahf-lm",
    "cx16",
    # supplied by QEMU/KVM whatever the host shows:
    "hypervisor",
    "x2apic",
    "tsc-deadline",
    "arat",
    "mtrr",
    "pat",
    "mce",
    "mca",
    "kvm-pv-unhalt",
    "kvm-pv-eoi",
]
V2 = ["pni", "popcnt", "sse4.1", "sse4.2", "ssse3"]
V3 = [*V2, "aes", "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"]
V4 = [*V3, "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]
SKX = [*V4, "pcid", "invpcid", "hle", "rtm", "spec-ctrl", "umip", "pdpe1gb", "rdtscp"]
ROME = [*V3, "sse4a", "misalignsse", "mmxext", "fxsr-opt", "cr8legacy", "amd-ssbd", "ibpb", "clzero"]

MODELS = {
    "kvm64": {"vendor": None, "features": BASE},
    "x86-64-v2": {"vendor": None, "features": BASE + V2},
    "x86-64-v2-AES": {"vendor": None, "features": [*BASE, *V2, "aes"]},
    "x86-64-v3": {"vendor": None, "features": BASE + V3},
    "x86-64-v4": {"vendor": None, "features": BASE + V4},
    "Skylake-Server": {"vendor": "intel", "features": BASE + SKX, "alias_of": "Skylake-Server-v1"},
    "Skylake-Server-v1": {"vendor": "intel", "features": BASE + SKX, "version": 1},
    "Skylake-Server-noTSX-v2": {
        "vendor": "intel",
        "features": [f for f in BASE + SKX if f not in ("hle", "rtm")],
        "version": 2,
    },
    "Cascadelake-Server-v3": {
        "vendor": "intel",
        "features": [*BASE, *SKX, "mds-no", "rdctl-no"],
        "version": 3,
    },
    "EPYC-Rome": {"vendor": "amd", "features": BASE + ROME, "alias_of": "EPYC-Rome-v1"},
    "EPYC-Rome-v1": {"vendor": "amd", "features": BASE + ROME, "version": 1},
    "Opteron_G1": {"vendor": "amd", "features": BASE, "version": 1, "deprecated": True},
    "host": {"vendor": None, "features": [], "passthrough": True},
    "max": {"vendor": None, "features": [], "passthrough": True},
}

LINUX_BASE = [
    *X86_64,
    "lahf_lm",
    "cx16",
    "pni",
    "popcnt",
    "sse4_1",
    "sse4_2",
    "ssse3",
    "aes",
    "avx",
    "avx2",
    "bmi1",
    "bmi2",
    "f16c",
    "fma",
    "abm",
    "movbe",
    "xsave",
    "constant_tsc",
    "nonstop_tsc",
]
AVX512 = ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]
SKX_LINUX = [
    *LINUX_BASE,
    *AVX512,
    "pcid",
    "invpcid",
    "hle",
    "rtm",
    "ibrs",
    "ibpb",
    "stibp",
    "ssbd",
    "pdpe1gb",
    "rdtscp",
    "vmx",
    "monitor",
]
ZEN2_LINUX = [
    *LINUX_BASE,
    "sse4a",
    "misalignsse",
    "mmxext",
    "fxsr_opt",
    "cr8_legacy",
    "ssbd",
    "ibpb",
    "ibrs",
    "stibp",
    "clzero",
    "svm",
    "clwb",
    "wbnoinvd",
    "pdpe1gb",
    "rdtscp",
]


def host(
    name: str,
    vendor: str,
    flags,
    *,
    bugs=None,
    family=None,
    model=None,
    source="cpuinfo",
    model_name: str = "",
) -> HostCpu:
    return HostCpu(
        name=name,
        vendor=vendor,
        model=model_name or f"{vendor} cpu",
        flags=frozenset(flags),
        flag_source=source,
        bugs=None if bugs is None else frozenset(bugs),
        family=family,
        model_number=model,
    )


SKX_HOST = host(
    "pve1", "intel", SKX_LINUX, bugs=["spectre_v1"], family=6, model=85, model_name="Xeon Gold 6132"
)
ZEN2_HOST = host("pve2", "amd", ZEN2_LINUX, bugs=["spectre_v1"], family=23, model=49, model_name="EPYC 7742")
OLD_HOST = host(
    "pve3",
    "intel",
    [f for f in LINUX_BASE if f not in ("avx2", "bmi1", "bmi2", "fma", "movbe", "abm")],
    bugs=[],
    family=6,
    model=45,
    model_name="Xeon E5-2670",
)


@pytest.fixture(autouse=True)
def inline_catalog(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    cat = load_catalog(json.dumps({"schema": 1, "provenance": {"generator": "inline"}, "models": MODELS}))
    monkeypatch.setattr(cpu_models, "catalog", lambda: cat)
    engine.clear_caches()
    yield
    engine.clear_caches()


def spec(value: str, custom=None) -> CpuSpec:
    return parse_cpu(value, custom)


# --- runnable ---------------------------------------------------------------------------------


def test_runnable_when_the_host_has_every_feature() -> None:
    v = check_runnable(spec("x86-64-v4"), SKX_HOST)
    assert v.runnable and v.missing == () and v.model == "x86-64-v4" and v.host == "pve1" and v.reasons == ()


def test_missing_features_are_linux_names_sorted_with_a_sentence() -> None:
    v = check_runnable(spec("x86-64-v4"), ZEN2_HOST)
    assert not v.runnable
    assert v.missing == ("avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512vl")
    assert v.reasons[0].code == "missing-flags"
    assert v.reasons[0].message.startswith(
        "pve2 lacks avx512bw, avx512cd, avx512dq, avx512f, avx512vl needed by cpu x86-64-v4"
    )
    old = check_runnable(spec("x86-64-v3"), OLD_HOST)
    assert old.missing == ("abm", "avx2", "bmi1", "bmi2", "fma", "movbe")


def test_aliases_resolve_to_their_versioned_model() -> None:
    assert check_runnable(spec("Skylake-Server"), SKX_HOST).model == "Skylake-Server-v1"


def test_hypervisor_supplied_features_are_never_required() -> None:
    # the models carry x2apic, tsc-deadline, hypervisor, arat, kvm-pv-*: no host shows them here
    bare = host("bare", "intel", LINUX_BASE)
    assert check_runnable(spec("x86-64-v3"), bare).runnable


def test_hidden_spec_ctrl_needs_ibrs_and_ibpb() -> None:
    assert check_runnable(spec("Skylake-Server-v1"), SKX_HOST).runnable
    no_ibpb = host("n", "intel", [f for f in SKX_LINUX if f != "ibpb"], bugs=[])
    v = check_runnable(spec("Skylake-Server-v1"), no_ibpb)
    assert v.missing == ("spec-ctrl",)


def test_umip_is_emulated_on_intel_but_needed_on_amd() -> None:
    custom = parse_custom_models("cpu-model: u\n    flags +umip\n")
    assert check_runnable(spec("custom-u", custom), host("i", "intel", LINUX_BASE)).runnable
    assert check_runnable(spec("custom-u", custom), host("a", "amd", LINUX_BASE)).missing == ("umip",)
    assert check_runnable(spec("custom-u", custom), host("a", "amd", [*LINUX_BASE, "umip"])).runnable


def test_amd_ssbd_needs_native_ssbd_zen2_or_later() -> None:
    rome = spec("EPYC-Rome")
    assert check_runnable(rome, ZEN2_HOST).runnable
    zen1 = host("zen1", "amd", ZEN2_LINUX, bugs=[], family=23, model=1)
    assert check_runnable(rome, zen1).missing == ("amd-ssbd",)
    unknown_family_zen2 = host("z", "amd", ZEN2_LINUX)  # Proxmox status: no family, clwb present
    assert check_runnable(rome, unknown_family_zen2).runnable
    unknown_family_zen1 = host("z", "amd", [f for f in ZEN2_LINUX if f not in ("clwb", "wbnoinvd")])
    assert "amd-ssbd" in check_runnable(rome, unknown_family_zen1).missing


def test_msr_features_follow_the_bugs_line() -> None:
    clx = spec("Cascadelake-Server-v3")
    clean = host("clean", "intel", SKX_LINUX, bugs=["spectre_v1"])
    assert check_runnable(clx, clean).runnable and check_runnable(clx, clean).reasons == ()
    mds = host("mds", "intel", SKX_LINUX, bugs=["mds", "cpu_meltdown"])
    assert check_runnable(clx, mds).missing == ("mds-no", "rdctl-no")


def test_msr_features_without_bugs_line_are_undecidable_not_missing() -> None:
    nobugs = host("nobugs", "intel", SKX_LINUX, bugs=None)
    v = check_runnable(spec("Cascadelake-Server-v3"), nobugs)
    assert v.runnable and v.missing == ()
    assert [r.code for r in v.reasons] == ["flags-undecidable"]
    assert "mds-no" in v.reasons[0].message and "no bugs: line" in v.reasons[0].message


def test_features_kvm_never_offers_are_missing_even_when_the_host_shows_them() -> None:
    custom = parse_custom_models("cpu-model: m\n    flags +monitor\n")
    assert check_runnable(spec("custom-m", custom), SKX_HOST).missing == ("monitor",)


def test_custom_model_builds_on_its_reported_model() -> None:
    custom = parse_custom_models(
        "cpu-model: lite\n    flags -avx512f;-avx512bw;-avx512cd;-avx512dq;-avx512vl\n"
        "    reported-model x86-64-v4\n"
    )
    v = check_runnable(spec("custom-lite", custom), ZEN2_HOST)
    assert v.runnable and v.model == "custom-lite"


def test_vm_flags_add_and_remove_requirements() -> None:
    assert check_runnable(spec("kvm64,flags=+pcid"), ZEN2_HOST).missing == ("pcid",)
    assert check_runnable(spec("kvm64,flags=+pcid"), SKX_HOST).runnable
    assert check_runnable(
        spec("x86-64-v2-AES,flags=-aes"), host("noaes", "intel", [f for f in LINUX_BASE if f != "aes"])
    ).runnable


def test_nested_virt_follows_the_host_vendor() -> None:
    nested = spec("kvm64,flags=+nested-virt")
    assert check_runnable(nested, SKX_HOST).runnable  # vmx
    assert check_runnable(nested, ZEN2_HOST).runnable  # svm
    assert check_runnable(nested, OLD_HOST).missing == ("vmx",)


def test_passthrough_always_starts() -> None:
    for value in ("host", "max"):
        v = check_runnable(spec(value), OLD_HOST)
        assert v.runnable and v.model == value


def test_qemu_kvm_flag_source_is_exact() -> None:
    qhost = host("q", "intel", [*MODELS["x86-64-v3"]["features"]], source="qemu-kvm")
    assert check_runnable(spec("x86-64-v3"), qhost).runnable
    v = check_runnable(spec("x86-64-v4"), qhost)
    assert v.missing == ("avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512vl")


def test_a_named_model_of_the_other_vendor_runs_with_a_caution() -> None:
    everything = host("big", "intel", [*ZEN2_LINUX, *SKX_LINUX], bugs=[])
    v = check_runnable(spec("EPYC-Rome"), everything)
    assert v.runnable and [r.code for r in v.reasons] == ["vendor-forced"]


def test_runnable_matrix_matches_check_runnable() -> None:
    specs = [
        spec(s)
        for s in (
            "kvm64",
            "x86-64-v4",
            "EPYC-Rome",
            "host",
            "kvm64,flags=+nested-virt",
            "Skylake-Server,flags=+pcid",
        )
    ]
    hosts = [SKX_HOST, ZEN2_HOST, OLD_HOST]
    matrix = runnable_matrix(specs, hosts)
    assert matrix == [[check_runnable(s, h).runnable for h in hosts] for s in specs]


# --- migration --------------------------------------------------------------------------------


def test_named_type_allowed_when_runnable_on_target() -> None:
    v = check_migration(spec("x86-64-v2-AES"), SKX_HOST, ZEN2_HOST)
    assert (v.verdict, v.reasons, v.suggestion, v.model) == ("allow", (), None, "x86-64-v2-AES")


def test_named_type_denied_with_what_the_target_lacks_and_a_suggestion() -> None:
    v = check_migration(spec("x86-64-v4"), SKX_HOST, ZEN2_HOST)
    assert v.verdict == "deny" and v.missing == ("avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512vl")
    assert v.reasons[0].code == "missing-flags"
    assert v.suggestion == "x86-64-v3 runs on both pve1 and pve2"


def test_unknown_source_judges_named_types_on_the_target() -> None:
    v = check_migration(spec("x86-64-v4"), None, ZEN2_HOST)
    assert v.verdict == "deny" and v.suggestion == "EPYC-Rome-v1 runs on pve2"  # the best of pve2's vendor


def test_passthrough_vendor_mismatch() -> None:
    v = check_migration(spec("host"), ZEN2_HOST, SKX_HOST)
    assert v.verdict == "deny" and [r.code for r in v.reasons] == ["vendor-mismatch"]
    assert v.reasons[0].message == (
        "CPU vendor mismatch: cpu host passes the source's AMD CPU through; pve1 is Intel: "
        "the guest would crash after cutover"
    )
    assert v.suggestion == "x86-64-v3 runs on both pve2 and pve1"


def test_passthrough_denied_when_the_target_lacks_a_source_feature() -> None:
    smaller = host("pve4", "intel", [f for f in SKX_LINUX if f not in AVX512], model_name="Xeon E5-2690 v4")
    v = check_migration(spec("host"), SKX_HOST, smaller)
    assert v.verdict == "deny" and v.missing == tuple(sorted(AVX512))
    assert "pve4 lacks avx512bw" in v.reasons[0].message and "from pve1" in v.reasons[0].message


def test_passthrough_allowed_with_caution_on_a_bigger_cpu() -> None:
    bigger = host("pve5", "intel", [*SKX_LINUX, "avx512_vnni", "la57"], model_name="Xeon Platinum 8380")
    v = check_migration(spec("max"), SKX_HOST, bigger)
    assert v.verdict == "allow" and [r.code for r in v.reasons] == ["passthrough-caution"]
    assert check_migration(spec("host"), bigger, SKX_HOST).verdict == "deny"


def test_passthrough_between_identical_cpus_is_a_plain_allow() -> None:
    twin = host(
        "pve6", "intel", SKX_LINUX, bugs=["spectre_v1"], family=6, model=85, model_name="Xeon Gold 6132"
    )
    assert check_migration(spec("host"), SKX_HOST, twin) == engine.MigrationVerdict(
        "allow", (), None, "host", "host"
    )


def test_passthrough_with_unknown_source_or_vendor_is_unknown() -> None:
    v = check_migration(spec("host"), None, SKX_HOST)
    assert v.verdict == "unknown" and v.reasons[0].code == "source-unknown"
    mystery = host("pve7", "unknown", SKX_LINUX)
    assert check_migration(spec("host"), SKX_HOST, mystery).reasons[0].code == "vendor-unknown"


def test_stopped_vms_need_only_to_start_on_the_target() -> None:
    assert check_migration(spec("host"), ZEN2_HOST, SKX_HOST, running=False).verdict == "allow"
    assert check_migration(spec("x86-64-v4"), SKX_HOST, ZEN2_HOST, running=False).verdict == "deny"
    nested = spec("kvm64,flags=+nested-virt")
    assert check_migration(nested, ZEN2_HOST, SKX_HOST, running=False).verdict == "allow"


def test_running_nested_virt_keeps_the_source_vendor_extension() -> None:
    v = check_migration(spec("kvm64,flags=+nested-virt"), ZEN2_HOST, SKX_HOST)
    assert v.verdict == "deny" and v.missing == ("svm",)
    assert {r.code for r in v.reasons} == {"missing-flags", "vendor-mismatch"}


# --- recommendation ---------------------------------------------------------------------------


def test_recommend_for_one_vendor_includes_its_named_models() -> None:
    rec = recommend([SKX_HOST, host("twin", "intel", SKX_LINUX, bugs=[])])
    # Cascadelake needs mds-no/rdctl-no: decidable here (bugs known, clean) -> runs, and it has most features
    assert rec.recommended == "Cascadelake-Server-v3"
    assert rec.ranked[:3] == ("Cascadelake-Server-v3", "Skylake-Server-v1", "Skylake-Server-noTSX-v2")
    assert "x86-64-v4" in rec.ranked and rec.ranked[-1] == "kvm64"
    assert "Opteron_G1" not in rec.ranked and "EPYC-Rome-v1" not in rec.ranked
    mds = recommend([SKX_HOST, host("mds", "intel", SKX_LINUX, bugs=["mds"])])
    assert mds.recommended == "Skylake-Server-v1"
    assert mds.blocked == (Blocked("Cascadelake-Server-v3", "mds", ("mds-no",)),)


def test_recommend_lists_the_better_types_that_fail() -> None:
    rec = recommend([SKX_HOST, ZEN2_HOST, OLD_HOST])
    assert rec.recommended == "x86-64-v2-AES"
    assert rec.ranked == ("x86-64-v2-AES", "x86-64-v2", "kvm64")
    assert Blocked("x86-64-v4", "pve2", tuple(sorted(AVX512))) in rec.blocked
    assert Blocked("x86-64-v3", "pve3", ("abm", "avx2", "bmi1", "bmi2", "fma", "movbe")) in rec.blocked
    assert {b.type for b in rec.blocked} == {"x86-64-v4", "x86-64-v3"}


def test_recommend_nothing_for_no_hosts() -> None:
    assert recommend([]) == engine.Recommendation(None, (), ())


# --- the seed's cases on real CPUs and the packaged catalog ------------------------------------


def _real_hosts() -> list[HostCpu]:
    dirs = [REPO / "shared" / "migration_guard" / "data" / "cpus", extra_cpus_dir()]
    hosts = []
    for folder in dirs:
        if folder is not None and folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                hosts.append(host_from_json(json.loads(path.read_text()), path.stem))
    return hosts


@pytest.fixture
def real(monkeypatch: pytest.MonkeyPatch) -> list[HostCpu]:
    if not (REPO / "shared" / "migration_guard" / "data" / "cpu_models.json").is_file():
        pytest.skip("shared/migration_guard/data/cpu_models.json is not there yet")
    monkeypatch.undo()
    cpu_models.catalog.cache_clear()
    engine.clear_caches()
    hosts = _real_hosts()
    if len(hosts) < 2:
        pytest.skip("no real CPU fixtures")
    return hosts


def _has(h: HostCpu, *flags: str) -> bool:
    return all(f in h.flags for f in flags)


def test_seed_host_from_amd_to_intel_is_denied(real: list[HostCpu]) -> None:
    amds = [h for h in real if h.vendor == "amd"]
    intels = [h for h in real if h.vendor == "intel"]
    assert amds and intels
    for amd in amds:  # every pair, so no fixture's place in the sort order decides the test
        for intel in intels:
            v = check_migration(parse_cpu("host"), amd, intel)
            assert v.verdict == "deny" and v.reasons[0].code == "vendor-mismatch", (amd.name, intel.name)
            assert v.suggestion is not None, (amd.name, intel.name)


def test_seed_v2_aes_runs_on_every_v2_class_node(real: list[HostCpu]) -> None:
    v2 = [h for h in real if _has(h, "cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3", "aes")]
    assert v2
    for h in v2:
        v = check_runnable(parse_cpu("x86-64-v2-AES"), h)
        assert v.runnable, (h.name, v.missing)


def test_seed_v4_only_where_avx512_exists(real: list[HostCpu]) -> None:
    for h in real:
        if not check_runnable(parse_cpu("x86-64-v3"), h).runnable:
            continue
        v = check_runnable(parse_cpu("x86-64-v4"), h)
        assert v.runnable == _has(h, *AVX512), (h.name, v.missing)
        if not v.runnable:
            assert set(v.missing) <= set(AVX512)


def test_seed_skylake_server_v1_denied_without_tsx(real: list[HostCpu]) -> None:
    skylakes = [h for h in real if check_runnable(parse_cpu("Skylake-Server"), h).runnable]
    assert skylakes, "no fixture runs Skylake-Server"
    for h in skylakes:
        no_tsx = HostCpu(
            name=h.name + "-notsx",
            vendor=h.vendor,
            model=h.model,
            flags=h.flags - {"hle", "rtm"},
            bugs=h.bugs,
            family=h.family,
            model_number=h.model_number,
        )
        v = check_migration(parse_cpu("Skylake-Server"), h, no_tsx)
        assert v.verdict == "deny" and v.missing == ("hle", "rtm"), v


def test_seed_kvm64_pcid_denied_on_zen2(real: list[HostCpu]) -> None:
    zen2 = [h for h in real if h.vendor == "amd" and h.family == 23 and (h.model_number or 0) >= 48]
    assert zen2
    for h in zen2:
        v = check_runnable(parse_cpu("kvm64,flags=+pcid"), h)
        assert not v.runnable and v.missing == ("pcid",)


def test_seed_epyc_rome_denied_on_intel(real: list[HostCpu]) -> None:
    intel = [h for h in real if h.vendor == "intel"]
    for h in intel:
        v = check_runnable(parse_cpu("EPYC-Rome"), h)
        assert not v.runnable and "sse4a" in v.missing, h.name


#: flags a microcode update (not the CPU generation) brings: an old dump may lack them
MICROCODE_FLAGS = {"spec-ctrl", "ssbd", "stibp", "md-clear", "arch-capabilities", "ibpb", "amd-ssbd"}


def test_real_cpus_run_their_own_generation(real: list[HostCpu]) -> None:
    expect = {
        ("intel", 6, 85): "Skylake-Server-v4",
        ("amd", 23, 49): "EPYC-Rome",
        ("amd", 23, 1): "EPYC-v2",
        ("intel", 6, 79): "Broadwell-v4",
        ("intel", 6, 63): "Haswell-v4",
        ("intel", 6, 62): "IvyBridge-v2",
        ("intel", 6, 45): "SandyBridge-v2",
    }
    for (vendor, family, number), model in expect.items():
        same = [h for h in real if (h.vendor, h.family, h.model_number) == (vendor, family, number)]
        if not same or cpu_models.catalog().resolve(model) is None:
            continue
        # some dumps come from old kernels or microcode that under-report: one CPU of the
        # generation is enough; a dump that lacks only the speculation-control flags that a
        # microcode update adds (the -IBRS / later versions) must still run the version-1 model
        verdicts = [check_runnable(parse_cpu(model), h) for h in same]
        if any(v.runnable for v in verdicts):
            continue
        base = model.rsplit("-v", 1)[0]
        for h, v in zip(same, verdicts, strict=True):
            assert set(v.missing) <= MICROCODE_FLAGS, (h.name, model, v.missing)
            assert check_runnable(parse_cpu(base), h).runnable, (h.name, base)


def test_suggestion_drops_only_the_vm_flags_that_stand_in_the_way() -> None:
    v = check_migration(spec("kvm64,flags=+pcid;+aes"), SKX_HOST, ZEN2_HOST)
    assert v.verdict == "deny" and v.missing == ("pcid",)
    assert v.suggestion == "kvm64,flags=+aes (without +pcid) runs on both pve1 and pve2"


def test_vmx_sub_features_and_paravirt_props_of_a_model_are_not_required() -> None:
    custom = parse_custom_models("cpu-model: q\n    flags +vmx-ept;+vmx-vpid;+npt;+kvm-pv-ipi;+hv-relaxed\n")
    assert check_runnable(spec("custom-q", custom), OLD_HOST).runnable
    evmcs = parse_custom_models("cpu-model: e\n    flags +hv-evmcs\n")
    assert check_runnable(spec("custom-e", evmcs), SKX_HOST).runnable
    assert check_runnable(spec("custom-e", evmcs), ZEN2_HOST).missing == ("hv-evmcs",)


def test_msr_only_bits_are_always_undecidable_and_intel_only() -> None:
    custom = parse_custom_models("cpu-model: g\n    flags +mcdt-no;+gds-no\n    reported-model kvm64\n")
    clean = host("clean", "intel", SKX_LINUX, bugs=["spectre_v1"])
    v = check_runnable(spec("custom-g", custom), clean)
    assert v.runnable and [r.code for r in v.reasons] == ["flags-undecidable"]
    assert "mcdt-no" in v.reasons[0].message and "never shows" in v.reasons[0].message
    gds = host("gds", "intel", SKX_LINUX, bugs=["gather_data_sampling"])
    assert check_runnable(spec("custom-g", custom), gds).missing == ("gds-no",)
    assert check_runnable(spec("custom-g", custom), ZEN2_HOST).missing == ("gds-no", "mcdt-no")


def test_recommendation_candidates_are_64_bit_and_not_duplicated(monkeypatch: pytest.MonkeyPatch) -> None:
    models = dict(MODELS)
    models["kvm64"] = {**MODELS["kvm64"], "alias_of": "kvm64-v1"}
    models["kvm64-v1"] = {"vendor": "intel", "features": BASE, "version": 1}
    models["486-v1"] = {"vendor": "intel", "features": ["fpu", "de", "pse"], "version": 1}
    cat = load_catalog(json.dumps({"schema": 1, "provenance": {}, "models": models}))
    monkeypatch.setattr(cpu_models, "catalog", lambda: cat)
    engine.clear_caches()
    names = engine.candidates([SKX_HOST])
    assert "486-v1" not in names and "kvm64-v1" not in names and names[-1] == "kvm64"
