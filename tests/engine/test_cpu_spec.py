"""The cpu: parser and the cpu-models.conf parser (shared/migration_guard/engine/cpu_spec.py)."""

from __future__ import annotations

import json

import pytest

from migration_guard.engine.cpu_models import load_catalog
from migration_guard.engine.cpu_spec import CpuSpec, CustomModel, format_cpu, parse_cpu, parse_custom_models
from migration_guard.errors import CpuSpecError, UnknownModelError

MODELS = load_catalog(
    json.dumps(
        {
            "schema": 1,
            "provenance": {"generator": "inline test data"},
            "models": {
                "kvm64": {"vendor": None, "features": ["sse2", "lahf-lm", "sep"]},
                "qemu64": {"vendor": None, "features": ["sse2"]},
                "x86-64-v2-AES": {"vendor": None, "features": ["sse2", "sse4.2", "aes"]},
                "Skylake-Server": {
                    "vendor": "intel",
                    "features": ["avx512f"],
                    "alias_of": "Skylake-Server-v1",
                },
                "Skylake-Server-v1": {"vendor": "intel", "features": ["avx512f", "hle", "rtm"], "version": 1},
                "Skylake-Server-v4": {"vendor": "intel", "features": ["avx512f"], "version": 4},
                "EPYC-Rome": {"vendor": "amd", "features": ["sse4a"], "alias_of": "EPYC-Rome-v1"},
                "EPYC-Rome-v1": {"vendor": "amd", "features": ["sse4a"], "version": 1},
                "host": {"vendor": None, "features": [], "passthrough": True},
            },
        }
    )
)

CONF = """\
# custom models
cpu-model: avx512
    flags +avx512f;+avx512bw;-hle
    phys-bits host
    hidden 0
    hv-vendor-id proxmox
    reported-model Skylake-Server-v4

cpu-model: plain
    reported-model kvm64
"""


def parse(value, custom=None):
    return parse_cpu(value, custom, models=MODELS)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_no_value_means_kvm64(value) -> None:
    spec = parse(value)
    assert spec.cputype == "kvm64" and spec.flags == () and not spec.is_passthrough


def test_the_whole_proxmox_format() -> None:
    spec = parse(
        "cputype=Skylake-Server,flags=+pcid;-md-clear;+spec-ctrl,hidden=1,hv-vendor-id=proxmox,"
        "phys-bits=host,guest-phys-bits=48"
    )
    assert spec == CpuSpec(
        raw=spec.raw,
        cputype="Skylake-Server",
        flags=(("pcid", True), ("md-clear", False), ("spec-ctrl", True)),
        hidden=True,
        hv_vendor_id="proxmox",
        phys_bits="host",
        guest_phys_bits=48,
    )


def test_positional_type_and_aliases_in_flags_are_normalised() -> None:
    spec = parse("kvm64,flags=+md_clear;+pcid;-pcid")
    assert spec.cputype == "kvm64"
    assert spec.flags == (("md-clear", True), ("pcid", False))


def test_only_the_type_given_as_option() -> None:
    assert parse("flags=+aes").cputype == "kvm64"
    assert parse("host").is_passthrough and parse("max").is_passthrough
    assert parse("phys-bits=40").phys_bits == "40"
    assert parse("x86-64-v2-AES,reported-model=kvm64").reported_model == "kvm64"
    assert parse("kvm64,hidden=0").hidden is False


@pytest.mark.parametrize(
    ("value", "error", "fragment"),
    [
        ("Skylake", UnknownModelError, "unknown CPU type 'Skylake'"),
        ("skylake-server", UnknownModelError, "did you mean 'Skylake-Server'"),
        ("custom-foo", UnknownModelError, "custom models need the cluster's cpu-models.conf"),
        ("kvm64,flags=pcid", CpuSpecError, "malformed flag list at 'pcid'"),
        ("kvm64,flags=+pcid;;+aes", CpuSpecError, "malformed flag list"),
        ("kvm64,flags=", CpuSpecError, "flags= is empty"),
        ("kvm64,flags=+avx2", CpuSpecError, "flag 'avx2' is not allowed in a VM's cpu flags"),
        ("kvm64,flags=+sse4_2", CpuSpecError, "not allowed"),
        ("kvm64,foo=bar", CpuSpecError, "unknown option 'foo'"),
        ("kvm64,pcid", CpuSpecError, "unexpected 'pcid'"),
        ("kvm64,cputype=host", CpuSpecError, "cputype is given twice"),
        ("kvm64,hidden=maybe", CpuSpecError, "hidden='maybe' is not a boolean"),
        ("kvm64,phys-bits=65", CpuSpecError, "phys-bits='65'"),
        ("kvm64,phys-bits=abc", CpuSpecError, "phys-bits='abc'"),
        ("kvm64,guest-phys-bits=31", CpuSpecError, "guest-phys-bits='31'"),
        ("kvm64,hv-vendor-id=way-too-long-vendor", CpuSpecError, "hv-vendor-id"),
        ("kvm64,reported-model=host", UnknownModelError, "reported-model='host'"),
        ("!!!", CpuSpecError, "'!!!' is not a CPU type"),
        ("kvm64\nflags=+aes", CpuSpecError, "control characters"),
        ("cputype=", CpuSpecError, "cputype= is empty"),
    ],
)
def test_bad_input_names_the_bad_part(value: str, error: type, fragment: str) -> None:
    with pytest.raises(error) as info:
        parse(value)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_errors_are_input_errors_with_stable_codes() -> None:
    with pytest.raises(CpuSpecError) as info:
        parse("kvm64,flags=+avx2")
    assert info.value.code == "bad-cpu-spec"
    with pytest.raises(UnknownModelError) as info2:
        parse("Nehalem-Bogus")
    assert info2.value.code == "unknown-model"


def test_custom_models_file() -> None:
    models = parse_custom_models(CONF, models=MODELS)
    assert set(models) == {"avx512", "plain"}
    avx = models["avx512"]
    assert avx == CustomModel(
        name="avx512",
        reported_model="Skylake-Server-v4",
        flags=(("avx512f", True), ("avx512bw", True), ("hle", False)),
        phys_bits="host",
        hidden=False,
        hv_vendor_id="proxmox",
    )
    assert models["plain"].reported_model == "kvm64" and models["plain"].flags == ()
    spec = parse("custom-avx512,flags=+pcid", models)
    assert spec.custom == avx and spec.flags == (("pcid", True),)
    with pytest.raises(UnknownModelError, match="does not define 'nope'"):
        parse("custom-nope", models)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("flags +aes\n", "line 1: expected 'cpu-model: NAME'"),
        ("cpu-model: a\n    bogus 1\n", "line 2: unknown property 'bogus'"),
        ("cpu-model: a\n    flags aes\n", "malformed flag list"),
        ("cpu-model: a\n    reported-model Nope\n", "reported-model='Nope'"),
        ("cpu-model: a\n\ncpu-model: a\n", "defined twice"),
        ("cpu-model: a b\n", "not a valid model name"),
    ],
)
def test_bad_custom_models_file(text: str, fragment: str) -> None:
    with pytest.raises(CpuSpecError, match=fragment):
        parse_custom_models(text, models=MODELS)


def test_custom_models_may_use_any_qemu_flag() -> None:
    models = parse_custom_models("cpu-model: x\n    flags +avx2;+sse4_2\n", models=MODELS)
    assert models["x"].flags == (("avx2", True), ("sse4.2", True))


@pytest.mark.parametrize(
    "value",
    [
        "kvm64",
        "host",
        "x86-64-v2-AES,flags=+aes;-pcid,hidden=1",
        "Skylake-Server-v4,phys-bits=host",
        "EPYC-Rome,hv-vendor-id=abc,guest-phys-bits=40,reported-model=kvm64",
        "",
    ],
)
def test_format_round_trips(value: str) -> None:
    spec = parse(value)
    again = parse(format_cpu(spec))
    assert again == CpuSpec(**{**{f: getattr(spec, f) for f in spec.__slots__}, "raw": again.raw})


def test_format_writes_proxmox_order() -> None:
    spec = parse("phys-bits=host,hidden=1,flags=+pcid,cputype=x86-64-v2-AES")
    assert format_cpu(spec) == "x86-64-v2-AES,flags=+pcid,hidden=1,phys-bits=host"
