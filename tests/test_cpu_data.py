"""The shipped CPU data: the model catalog (shared/data/cpu_models.json) and the real CPU fixtures
(shared/data/cpus/*.json), as the engine and the test server read them.

Checks that every entry carries its provenance, that aliases resolve the way QEMU registers them,
spot checks of models whose features decide real verdicts (TSX, AVX-512, Proxmox's additions), and
that no fixture is a copy of a ../shared/real-cpus dump (checked only when that folder is there)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.cpu_models import GENERIC_LADDER, Catalog, catalog, load_catalog

REPO = Path(__file__).resolve().parents[1]
CATALOG_FILE = REPO / "shared" / "data" / "cpu_models.json"
FIXTURES = REPO / "shared" / "data" / "cpus"
REAL_CPUS = REPO.parent / "shared" / "real-cpus"

#: models that take the node's vendor (QEMU's generic types, Proxmox's x86-64-v*, passthrough)
GENERIC = re.compile(r"^(qemu64|qemu32|kvm64|kvm32|x86-64-v[234](-AES)?|host|max|base)(-v\d+)?$")
#: QEMU models of vendors that are neither Intel nor AMD (Zhaoxin): no Proxmox node matches them
OTHER_VENDOR = re.compile(r"^YongFeng(-v\d+)?$")

pytestmark = pytest.mark.skipif(not CATALOG_FILE.is_file(), reason="shared/data/cpu_models.json is not there yet")


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
            assert GENERIC.match(name) or OTHER_VENDOR.match(name), f"{name} is a named CPU model but has no vendor"


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
    notsx = [f for f in intel if f["cpu_family"] == 6 and f["model"] == 85
             and not {"hle", "rtm"} & set(f["flags"])]
    assert notsx and any("tsx" in f.get("note", "").lower() for f in notsx)
    # and one with TSX on
    assert any(f["cpu_family"] == 6 and f["model"] == 85 and {"hle", "rtm"} <= set(f["flags"]) for f in intel)
    # AMD: an Opteron (family 0x10 or 0x15) and Zen (family 0x17 / 0x19)
    assert any(f["cpu_family"] in (16, 21) for f in amd)
    assert any(f["cpu_family"] == 23 for f in amd) and any(f["cpu_family"] == 25 for f in amd)
    assert any("avx512f" in f["flags"] for f in amd)  # Zen 4


@pytest.mark.skipif(not REAL_CPUS.is_dir(), reason="../shared/real-cpus is not present")
def test_no_fixture_is_a_copy_of_a_real_cpus_dump() -> None:
    reference = {}
    for path in sorted(REAL_CPUS.glob("*.json")):
        data = load_fixture(path)
        reference[tuple(sorted(data["flags"]))] = path.name
    for path in fixture_files():
        key = tuple(sorted(load_fixture(path)["flags"]))
        assert key not in reference, f"{path.name} has the flags of ../shared/real-cpus/{reference.get(key)}"
