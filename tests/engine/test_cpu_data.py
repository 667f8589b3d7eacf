"""The shipped CPU data: the model catalog (shared/migration_guard/data/cpu_models.json) and the real CPU
fixtures
(shared/migration_guard/data/cpus/*.json), as the engine and the test server read them.

Checks that every entry carries its provenance, that aliases resolve the way QEMU registers them,
spot checks of models whose features decide real verdicts (TSX, AVX-512, Proxmox's additions), and
that no fixture is a copy of a dump of the optional extra CPU folder (MIGRATION_GUARD_TEST_EXTRA_CPUS,
checked only when it names one)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from migration_guard.engine.cpu_models import GENERIC_LADDER, Catalog, catalog, load_catalog
from tests.support.extra_cpus import SKIP_REASON, extra_cpus_dir

REPO = Path(__file__).resolve().parents[2]
CATALOG_FILE = REPO / "shared" / "migration_guard" / "data" / "cpu_models.json"
FIXTURES = REPO / "shared" / "migration_guard" / "data" / "cpus"
REAL_CPUS = extra_cpus_dir()

#: models that take the node's vendor (QEMU's generic types, Proxmox's x86-64-v*, passthrough)
GENERIC = re.compile(r"^(qemu64|qemu32|kvm64|kvm32|x86-64-v[234](-AES)?|host|max|base)(-v\d+)?$")
#: QEMU models of vendors that are neither Intel nor AMD (Zhaoxin): no Proxmox node matches them
OTHER_VENDOR = re.compile(r"^YongFeng(-v\d+)?$")

pytestmark = pytest.mark.skipif(
    not CATALOG_FILE.is_file(), reason="shared/migration_guard/data/cpu_models.json is not there yet"
)


@pytest.fixture(scope="module")
def raw() -> dict:
    return json.loads(CATALOG_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return catalog()


def fixture_files() -> list[Path]:
    return sorted(FIXTURES.glob("*.json"))


def load_fixture(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# the catalog


def test_packaged_catalog_loads_through_the_engine_loader(cat: Catalog, raw: dict) -> None:
    assert set(raw["models"]) <= set(cat.models)
    assert len(cat.models) >= 100
    # the same text through load_catalog gives the same models (no hidden state in catalog())
    again = load_catalog(CATALOG_FILE.read_text(encoding="utf-8"))
    assert set(again.models) == set(cat.models)


def test_catalog_records_how_it_was_made(raw: dict) -> None:
    prov = raw["provenance"]
    assert prov["generator"] == "tools/generate_cpu_models.py"
    assert re.match(r"\d+\.\d+\.\d+", str(prov["qemu"])), prov["qemu"]
    assert prov["accel"] in ("tcg", "kvm")
    assert "CPUConfig.pm" in prov["proxmox_source"]


def test_every_model_names_its_source_and_vendor(raw: dict) -> None:
    for name, entry in raw["models"].items():
        assert str(entry.get("source") or "").strip(), f"{name} has no source"
        assert "vendor" in entry, f"{name} has no vendor field"
        assert entry["vendor"] in ("intel", "amd", None), f"{name}: vendor {entry['vendor']!r}"
        if entry["vendor"] is None:
            assert GENERIC.match(name) or OTHER_VENDOR.match(name), (
                f"{name} is a named CPU model but has no vendor"
            )


def test_named_families_have_the_right_vendor(cat: Catalog) -> None:
    for name in ("EPYC-Rome", "EPYC-Milan", "EPYC", "Opteron_G5"):
        model = cat.resolve(name)
        assert model is not None and model.vendor == "amd", name
    for name in ("Skylake-Server", "Cascadelake-Server", "Icelake-Server", "Haswell", "Westmere"):
        model = cat.resolve(name)
        assert model is not None and model.vendor == "intel", name
    for name in GENERIC_LADDER:
        model = cat.resolve(name)
        assert model is not None and model.vendor is None, name


def test_unversioned_names_resolve_to_their_v1(cat: Catalog, raw: dict) -> None:
    assert cat.resolve("Skylake-Server").name == "Skylake-Server-v1"
    assert cat.resolve("kvm64").name == "kvm64-v1"
    assert cat.resolve("EPYC-Rome").name == "EPYC-Rome-v1"
    for name, entry in raw["models"].items():
        if entry.get("alias_of"):
            target = raw["models"].get(entry["alias_of"])
            assert target is not None, f"{name} is an alias of the unknown {entry['alias_of']}"
            assert not target.get("alias_of"), f"{name} -> {entry['alias_of']} is an alias of an alias"
            assert entry["features"] == [], f"alias {name} carries features of its own"


def test_named_aliases_resolve_to_the_version_qemu_gives_them(cat: Catalog) -> None:
    assert cat.resolve("Skylake-Server-noTSX-IBRS").name == "Skylake-Server-v3"
    assert cat.resolve("Cascadelake-Server-noTSX").name == "Cascadelake-Server-v3"
    assert cat.resolve("Haswell-noTSX").name == "Haswell-v2"


def test_skylake_server_v1_has_tsx_and_its_notsx_version_does_not(cat: Catalog) -> None:
    v1 = cat.resolve("Skylake-Server-v1").features
    assert {"hle", "rtm"} <= v1
    for name in ("Skylake-Server-noTSX-IBRS", "Cascadelake-Server-noTSX", "Haswell-noTSX"):
        feats = cat.resolve(name).features
        assert not {"hle", "rtm"} & feats, f"{name} still has TSX"


def test_x86_64_v4_has_the_avx512_baseline(cat: Catalog) -> None:
    v4 = cat.resolve("x86-64-v4").features
    assert {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"} <= v4
    assert {"avx", "avx2", "fma", "bmi1", "bmi2", "movbe"} <= v4
    v3 = cat.resolve("x86-64-v3").features
    assert "avx2" in v3 and "avx512f" not in v3
    assert "aes" in cat.resolve("x86-64-v2-AES").features
    assert "aes" not in cat.resolve("x86-64-v2").features


def test_kvm64_gets_proxmox_lahf_lm_and_sep(cat: Catalog) -> None:
    kvm64 = cat.resolve("kvm64")
    assert kvm64.name == "kvm64-v1"
    assert {"lahf-lm", "sep"} <= kvm64.features


def test_every_kvm_guest_gets_proxmox_pv_flags(cat: Catalog, raw: dict) -> None:
    for name, entry in raw["models"].items():
        if entry.get("alias_of") or entry.get("passthrough"):
            continue
        assert {"kvm-pv-unhalt", "kvm-pv-eoi"} <= cat.get(name).features, name


def test_kvm_defaults_apply_to_named_models(cat: Catalog) -> None:
    # kvm_default_props: the guest never sees svm/monitor on a named model under KVM
    for name in ("EPYC-Rome-v1", "EPYC-Milan-v1", "Opteron_G5-v1"):
        feats = cat.get(name).features
        assert "svm" not in feats and "monitor" not in feats, name
        assert {"kvmclock", "x2apic"} <= feats, name


def test_models_newer_than_the_asked_qemu_name_their_qemu_source(raw: dict) -> None:
    for name, entry in raw["models"].items():
        source = str(entry.get("source") or "")
        if "target/i386/cpu.c" in source and "QMP" not in source:
            assert "qemu/qemu" in source and re.search(r"@ ?\S+|v\d+\.\d+|[0-9a-f]{12,}", source), (
                f"{name}: {source!r} does not record the QEMU commit or tag it was translated from"
            )
            assert entry["alias_of"] or entry["features"], f"{name} has no features"


# ---------------------------------------------------------------------------------------------
# the real CPU fixtures


def test_there_are_enough_fixtures() -> None:
    assert len(fixture_files()) >= 14


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: p.stem)
def test_fixture_shape_and_provenance(path: Path) -> None:
    fx = load_fixture(path)
    assert re.fullmatch(r"(intel|amd)-[a-z0-9]+(-[a-z0-9]+)+", path.stem), path.name
    assert str(fx.get("source") or "").strip(), f"{path.name} does not say where its dump came from"
    assert str(fx.get("model_name") or "").strip()
    assert fx["vendor_id"] in ("GenuineIntel", "AuthenticAMD")
    assert path.stem.startswith("intel-" if fx["vendor_id"] == "GenuineIntel" else "amd-"), path.name
    assert isinstance(fx["cpu_family"], int) and isinstance(fx["model"], int)
    flags = fx["flags"]
    assert isinstance(flags, list) and len(flags) >= 30, f"{path.name}: too few flags for a dump"
    assert all(isinstance(f, str) and f and " " not in f for f in flags)
    if len(flags) != len(set(flags)):  # kept as dumped (old kernels print "dts" twice); the note says so
        assert "twice" in fx.get("note", ""), f"{path.name} repeats a flag and its note does not say why"
    assert {"fpu", "tsc", "cx8", "sse2"} <= set(flags), f"{path.name} lacks the x86-64 baseline"
    if "bugs" in fx:
        assert isinstance(fx["bugs"], list) and all(isinstance(b, str) for b in fx["bugs"])
    if "note" in fx:
        assert isinstance(fx["note"], str) and fx["note"].strip()


def test_fixtures_cover_the_classes_the_demo_and_tests_need() -> None:
    fixtures = [load_fixture(p) for p in fixture_files()]
    intel = [f for f in fixtures if f["vendor_id"] == "GenuineIntel"]
    amd = [f for f in fixtures if f["vendor_id"] == "AuthenticAMD"]
    assert intel and amd
    # an Atom-class Intel part without AVX
    assert any("avx" not in f["flags"] for f in intel)
    # a client Intel part with AVX2 but no AVX-512
    assert any("avx2" in f["flags"] and "avx512f" not in f["flags"] for f in intel)
    # a Skylake/Cascade Lake server (family 6 model 85) with TSX disabled, and saying so
    notsx = [
        f for f in intel if f["cpu_family"] == 6 and f["model"] == 85 and not {"hle", "rtm"} & set(f["flags"])
    ]
    assert notsx and any("tsx" in f.get("note", "").lower() for f in notsx)
    # and one with TSX on
    assert any(f["cpu_family"] == 6 and f["model"] == 85 and {"hle", "rtm"} <= set(f["flags"]) for f in intel)
    # AMD: an Opteron (family 0x10 or 0x15) and Zen (family 0x17 / 0x19)
    assert any(f["cpu_family"] in (16, 21) for f in amd)
    assert any(f["cpu_family"] == 23 for f in amd) and any(f["cpu_family"] == 25 for f in amd)
    assert any("avx512f" in f["flags"] for f in amd)  # Zen 4


@pytest.mark.skipif(REAL_CPUS is None, reason=SKIP_REASON)
def test_no_fixture_is_a_copy_of_a_real_cpus_dump() -> None:
    assert REAL_CPUS is not None
    reference = {}
    for path in sorted(REAL_CPUS.glob("*.json")):
        data = load_fixture(path)
        reference[tuple(sorted(data["flags"]))] = path.name
    for path in fixture_files():
        key = tuple(sorted(load_fixture(path)["flags"]))
        assert key not in reference, f"{path.name} has the flags of {REAL_CPUS / str(reference.get(key))}"


# ---------------------------------------------------------------------------------------------
# how the catalog was made: tools/generate_cpu_models.py and tools/newer_models.json

import importlib.util  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

NEWER = REPO / "tools" / "newer_models.json"
GENERATOR = REPO / "tools" / "generate_cpu_models.py"
QEMU = Path("/usr/bin/qemu-system-x86_64")
TSX = {"hle", "rtm"}


def _load_generator():
    spec = importlib.util.spec_from_file_location("generate_cpu_models", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate_cpu_models"] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def test_provenance_names_expansion_adjustments_and_newer_source(raw: dict) -> None:
    prov = raw["provenance"]
    assert prov["expansion"] == "static"
    if prov["accel"] == "tcg":
        assert prov["kvm_adjustments"] == gen.KVM_DEFAULT_PROPS
        assert "kvm_default_props" in prov["kvm_adjustments_source"]
        assert prov["tcg_adjustments_undone"] == {"vme": False}
    assert prov["newer_models_source"].startswith("qemu/qemu target/i386/cpu.c @ v")


def test_feature_names_are_qemu_canonical(raw: dict) -> None:
    # QEMU's feature properties use '-' (the '_' spellings are aliases), and static expansion never
    # reports QEMU's own knobs
    knobs = {"check", "enforce", "l3-cache", "legacy-cache", "tcg-cpuid", "pmu", "kvm"}
    for name, entry in raw["models"].items():
        assert entry["features"] == sorted(set(entry["features"])), f"{name}: features sorted, once each"
        assert not any("_" in f for f in entry["features"]), name
        assert not knobs & set(entry["features"]), name
        assert not any(f.startswith("x-") for f in entry["features"]), name


def test_every_named_model_has_the_kvm_view(raw: dict) -> None:
    for name, entry in raw["models"].items():
        if entry["alias_of"] or entry["passthrough"]:
            continue
        f = set(entry["features"])
        assert {"kvmclock", "kvm-pv-eoi", "x2apic"} <= f, name
        assert not {"svm", "monitor", "acpi", "kvm-msi-ext-dest-id"} & f, name
        # QEMU's feature dependencies run after the KVM defaults: svm off takes npt & co. with it
        assert not {"npt", "nrip-save", "svme-addr-chk"} & f, name


def test_tcg_vme_off_is_undone(cat: Catalog) -> None:
    assert "vme" in cat.resolve("Skylake-Server-v1").features
    assert "vme" in cat.resolve("kvm64").features
    assert "vme" not in cat.resolve("qemu64").features  # qemu64's definition has no VME


def test_skylake_server_later_versions_drop_tsx(cat: Catalog) -> None:
    assert cat.resolve("Skylake-Server-v2").features >= TSX
    for name in ("Skylake-Server-v3", "Skylake-Server-v4", "Skylake-Server-v5"):
        assert not TSX & cat.resolve(name).features, name


def test_epyc_rome_is_amd_without_pcid(cat: Catalog) -> None:
    rome = cat.resolve("EPYC-Rome")
    assert rome.vendor == "amd"
    assert "pcid" not in rome.features and {"avx2", "sha-ni", "clzero"} <= rome.features


def test_proxmox_types_are_qemu64_plus_their_flags(cat: Catalog) -> None:
    qemu64 = cat.resolve("qemu64").features
    v2 = cat.resolve("x86-64-v2").features
    v2_aes = cat.resolve("x86-64-v2-AES").features
    v3 = cat.resolve("x86-64-v3").features
    v4 = cat.resolve("x86-64-v4").features
    assert v2 == qemu64 | {"popcnt", "pni", "sse4.1", "sse4.2", "ssse3"}
    assert v2_aes == v2 | {"aes"}
    assert v3 == v2_aes | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
    assert v4 == v3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


def test_proxmox_per_type_additions(cat: Catalog) -> None:
    assert {"+lahf-lm", "+sep", "+kvm-pv-unhalt", "+kvm-pv-eoi"} <= set(cat.resolve("kvm64").proxmox_added)
    kvm32 = cat.resolve("kvm32").proxmox_added
    assert "+sep" in kvm32 and "+lahf-lm" not in kvm32
    for name in ("Opteron_G1", "Opteron_G3", "Opteron_G5"):
        model = cat.resolve(name)
        assert "rdtscp" not in model.features and "-rdtscp" in model.proxmox_added, name
    assert "rdtscp" in cat.resolve("EPYC").features


def test_models_newer_than_qemu_7_2(raw: dict, cat: Catalog) -> None:
    newer = [n for n, e in raw["models"].items() if e["source"].startswith("qemu/qemu target/i386/cpu.c")]
    for name in (
        "SapphireRapids-v1",
        "SapphireRapids-v4",
        "GraniteRapids-v3",
        "SierraForest-v3",
        "ClearwaterForest-v1",
        "EPYC-Genoa-v2",
        "EPYC-Turin-v1",
        "EPYC-Milan-v3",
        "EPYC-Rome-v5",
        "Icelake-Server-v7",
    ):
        assert name in newer, name
    spr = cat.resolve("SapphireRapids").features
    assert {"amx-tile", "amx-int8", "amx-bf16", "avx512-fp16", "avx512f"} <= spr and spr >= TSX
    assert {"amx-fp16", "prefetchiti"} <= cat.resolve("GraniteRapids").features
    sierra = cat.resolve("SierraForest").features
    assert "avx512f" not in sierra and {"avx-vnni-int8", "cmpccxadd"} <= sierra
    genoa = cat.resolve("EPYC-Genoa")
    assert genoa.vendor == "amd" and {"avx512f", "avx512-bf16", "pcid"} <= genoa.features
    assert not TSX & genoa.features


def test_newer_models_table_records_its_source_and_translator_check() -> None:
    table = json.loads(NEWER.read_text(encoding="utf-8"))
    assert table["source"].startswith("qemu/qemu target/i386/cpu.c @ v")
    assert table["check"]["models_compared"] >= 70
    assert table["check"]["disagreements"] == []
    svm = next(d for d in table["feature_dependencies"] if d["from"] == ["svm"])
    assert "npt" in svm["to"]
    assert "Skylake-Server-v1" in table["tcg_removed"]["vme"]
    assert table["vendors"]["EPYC-Turin"] == "AuthenticAMD"


SYNTH_H = """
#define CPUID_FP87 (1U << 0)
#define CPUID_VME  (1U << 1)
#define CPUID_EXT_SSE3 (1U << 0)
#define CPUID_EXT_VMX  (1U << 5)
#define CPUID_EXT_HYPERVISOR (1U << 31)
#define CPUID_7_0_EBX_HLE (1U << 4)
#define CPUID_7_0_EBX_RTM (1U << 11)
#define VMX_EPT (1ULL << 1)
#define CPUID_VENDOR_INTEL "GenuineIntel"
"""
SYNTH_C = """
#define BASE_FEATURES (CPUID_FP87 | \\
          CPUID_VME)
FeatureWordInfo feature_word_info[FEATURE_WORDS] = {
    [FEAT_1_EDX] = { .type = CPUID_FEATURE_WORD,
        .feat_names = { "fpu", "vme" /* virtual 8086 */, NULL, }, },
    [FEAT_1_ECX] = { .type = CPUID_FEATURE_WORD,
        .feat_names = { "pni", NULL, NULL, NULL, NULL, "vmx", NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, "hypervisor", }, },
    [FEAT_7_0_EBX] = { .feat_names = { NULL, NULL, NULL, NULL, "hle", NULL, NULL, NULL,
            NULL, NULL, NULL, "rtm", }, },
    [FEAT_VMX] = { .feat_names = { NULL, "vmx-ept", }, },
};
static FeatureDep feature_dependencies[] = {
    { .from = { FEAT_1_ECX, CPUID_EXT_VMX }, .to = { FEAT_VMX, ~0ull }, },
};
static const X86CPUDefinition builtin_x86_defs[] = {
    {
        .name = "Toy",
        .vendor = CPUID_VENDOR_INTEL,
        .features[FEAT_1_EDX] = BASE_FEATURES,
        .features[FEAT_1_ECX] = CPUID_EXT_SSE3,
        .features[FEAT_7_0_EBX] = CPUID_7_0_EBX_HLE | CPUID_7_0_EBX_RTM,
        .features[FEAT_VMX] = VMX_EPT,
        .model_id = "Toy, with a comma",
        .versions = (X86CPUVersionDefinition[]) {
            { .version = 1 },
            { .version = 2, .alias = "Toy-noTSX",
              .props = (PropValue[]) { { "hle", "off" }, { "rtm", "off" },
                                       { "model-id", "Toy (no TSX, really)" }, { /* end */ } } },
            { .version = 3, .props = (PropValue[]) { { "vmx", "on" }, { /* end */ } } },
            { /* end */ }
        }
    },
};
"""


def test_translator_follows_qemus_rules() -> None:
    parsed = gen.CpuDefinitions(SYNTH_C, SYNTH_H).models()
    assert parsed["Toy"] == {"vendor_id": "GenuineIntel", "features": set(), "alias_of": "Toy-v1"}
    assert parsed["Toy-v1"]["features"] == {"fpu", "vme", "pni", "hypervisor", "hle", "rtm"}
    assert parsed["Toy-v2"]["features"] == {"fpu", "vme", "pni", "hypervisor"}
    assert parsed["Toy-noTSX"]["alias_of"] == "Toy-v2"
    # v3 inherits v2's props; vmx on keeps the vmx-* word that the dependency otherwise clears
    assert parsed["Toy-v3"]["features"] == {"fpu", "vme", "pni", "hypervisor", "vmx", "vmx-ept"}
    deps = gen.CpuDefinitions(SYNTH_C, SYNTH_H).dependency_names()
    assert deps == [{"from": ["vmx"], "to": ["vmx-ept"]}]


def test_translator_check_reports_disagreements() -> None:
    parsed = gen.CpuDefinitions(SYNTH_C, SYNTH_H).models()
    asked = {"Toy-v1": {"features": {"fpu", "pni", "hypervisor", "hle", "rtm"}, "alias_of": None}}
    assert gen.check_translator(parsed, asked, "tcg") == []  # TCG turns vme off
    asked["Toy-v1"]["features"].add("avx")
    [problem] = gen.check_translator(parsed, asked, "tcg")
    assert problem.startswith("Toy-v1: translation lacks ['avx']")


def _asked(vendor: str) -> dict[str, dict]:
    return {
        "qemu64": {"vendor_id": "AuthenticAMD", "features": set(), "alias_of": "qemu64-v1"},
        "qemu64-v1": {"vendor_id": vendor, "features": {"fpu", "sep", "svm", "lahf-lm"}, "alias_of": None},
        "Toy": {"vendor_id": vendor, "features": set(), "alias_of": "Toy-v1"},
        "Toy-v1": {"vendor_id": vendor, "features": {"fpu", "pni", "svm", "npt"}, "alias_of": None},
        "host": {"vendor_id": None, "features": set(), "alias_of": None},
    }


TABLE = {
    "source": "qemu/qemu target/i386/cpu.c @ v9.9.9 (test)",
    "tcg_removed": {"vme": ["Toy-v1"]},
    "translated": ["Toy-v1", "qemu64-v1"],
    "vendors": {"Toy": "GenuineIntel", "Toy-v1": "GenuineIntel"},
    "feature_dependencies": [{"from": ["svm"], "to": ["npt"]}],
    "check": {"models_compared": 2, "against": "test", "disagreements": []},
    "models": {"Toy-v2": {"vendor_id": "GenuineIntel", "features": ["fpu", "pni"], "alias_of": None}},
}


def test_build_under_tcg_applies_qemu_and_proxmox_adjustments() -> None:
    data = gen.build(_asked("GenuineIntel"), "7.2.0", "", "tcg", TABLE, "qemu")
    toy = data["models"]["Toy-v1"]
    assert toy["vendor"] == "intel"
    assert set(toy["features"]) == {
        "fpu",
        "pni",
        "vme",
        "x2apic",
        "kvmclock",
        "kvm-nopiodelay",
        "kvm-asyncpf",
        "kvm-steal-time",
        "kvm-pv-eoi",
        "kvmclock-stable-bit",
        "kvm-pv-unhalt",
    }
    assert data["models"]["Toy-v2"]["source"] == "qemu/qemu target/i386/cpu.c v9.9.9"
    assert "vme" not in data["models"]["Toy-v2"]["features"]  # from the table: the definition, no TCG
    assert data["models"]["x86-64-v2"]["vendor"] is None
    assert "svm" not in data["models"]["x86-64-v2"]["features"]


def test_build_under_kvm_takes_features_as_reported_and_vendor_from_definitions() -> None:
    # under KVM QEMU reports the node's vendor for every named model: here an AMD node
    asked = _asked("AuthenticAMD")
    asked["Toy-v1"]["features"] = {"fpu", "pni", "vme", "x2apic"}
    data = gen.build(asked, "10.0.0", "", "kvm", TABLE, "/usr/bin/kvm")
    toy = data["models"]["Toy-v1"]
    assert toy["vendor"] == "intel"
    assert set(toy["features"]) == {"fpu", "pni", "vme", "x2apic", "kvm-pv-unhalt", "kvm-pv-eoi"}
    assert data["provenance"]["kvm_adjustments"] == {}
    assert data["provenance"]["kvm_adjustments_source"] == "reported by QEMU itself under KVM"


def test_generator_refuses_a_missing_qemu(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(GENERATOR),
            "--qemu",
            str(tmp_path / "no-qemu"),
            "-o",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr
    assert not (tmp_path / "out.json").exists()


@pytest.mark.integration
@pytest.mark.skipif(not QEMU.exists(), reason="qemu-system-x86_64 is not installed")
def test_generator_reproduces_the_committed_catalog(tmp_path: Path, raw: dict) -> None:
    if raw["provenance"]["qemu_binary"] != str(QEMU) or raw["provenance"]["accel"] != "tcg":
        pytest.skip("the committed catalog was made with another QEMU")
    out = tmp_path / "cpu_models.json"
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--qemu", str(QEMU), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    fresh = json.loads(out.read_text(encoding="utf-8"))
    if fresh["provenance"]["qemu"] != raw["provenance"]["qemu"]:
        pytest.skip(f"installed QEMU {fresh['provenance']['qemu']} differs from the catalog's")
    assert fresh["models"] == raw["models"]
