"""Properties: parse_cpu never raises anything but CpuSpecError, accepted specs round-trip through
format_cpu, and the fast batch path agrees with check_runnable."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migration_guard.engine import cpu_models
from migration_guard.engine import verdicts as engine
from migration_guard.engine.cpu_models import load_catalog
from migration_guard.engine.cpu_spec import CpuSpec, format_cpu, parse_cpu
from migration_guard.engine.hosts import HostCpu
from migration_guard.errors import CpuSpecError

FEATURES = [
    "sse2",
    "pni",
    "sse4.2",
    "aes",
    "avx",
    "avx2",
    "avx512f",
    "pcid",
    "hle",
    "rtm",
    "sse4a",
    "spec-ctrl",
    "amd-ssbd",
    "x2apic",
    "hypervisor",
    "mds-no",
]
MODELS = load_catalog(
    json.dumps(
        {
            "schema": 1,
            "provenance": {},
            "models": {
                "kvm64": {"vendor": None, "features": ["sse2", "x2apic", "hypervisor"]},
                "x86-64-v2-AES": {"vendor": None, "features": ["sse2", "pni", "sse4.2", "aes"]},
                "x86-64-v3": {"vendor": None, "features": ["sse2", "pni", "sse4.2", "aes", "avx", "avx2"]},
                "Skylake-Server": {
                    "vendor": "intel",
                    "features": ["avx512f", "hle", "rtm", "pcid", "spec-ctrl", "mds-no"],
                    "alias_of": "Skylake-Server-v1",
                },
                "Skylake-Server-v1": {
                    "vendor": "intel",
                    "features": ["avx512f", "hle", "rtm", "pcid", "spec-ctrl", "mds-no"],
                    "version": 1,
                },
                "EPYC-Rome-v1": {"vendor": "amd", "features": ["sse4a", "amd-ssbd", "avx2"], "version": 1},
                "host": {"vendor": None, "features": [], "passthrough": True},
            },
        }
    )
)

PIECES = [
    "kvm64",
    "host",
    "max",
    "x86-64-v3",
    "Skylake-Server",
    "EPYC-Rome-v1",
    "custom-x",
    "cputype=",
    "flags=",
    "+pcid",
    "-pcid",
    "+aes",
    "+nested-virt",
    "+md_clear",
    "+avx",
    ";",
    ",",
    "=",
    "hidden=1",
    "hidden=",
    "phys-bits=",
    "host",
    "40",
    "guest-phys-bits=",
    "48",
    "hv-vendor-id=",
    "abc",
    "reported-model=",
    " ",
    "\t",
    "\n",
    "\x00",
    "é",
    "+",
    "-",
    "",
    "x86-64-v2-AES",
]
texts = st.one_of(st.text(max_size=60), st.lists(st.sampled_from(PIECES), max_size=10).map("".join))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts)
def test_parse_cpu_raises_only_cpu_spec_errors_and_round_trips(text: str) -> None:
    try:
        spec = parse_cpu(text, models=MODELS)
    except CpuSpecError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    again = parse_cpu(format_cpu(spec), models=MODELS)
    assert again == CpuSpec(**{**{f: getattr(spec, f) for f in spec.__slots__}, "raw": again.raw})


hosts_st = st.builds(
    lambda name, vendor, flags, bugs: HostCpu(
        name=name,
        vendor=vendor,
        model="",
        flags=frozenset(flags),
        bugs=None if bugs is None else frozenset(bugs),
    ),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(["intel", "amd", "unknown"]),
    st.sets(
        st.sampled_from(
            [
                "sse2",
                "pni",
                "sse4_2",
                "aes",
                "avx",
                "avx2",
                "avx512f",
                "pcid",
                "hle",
                "rtm",
                "sse4a",
                "ssbd",
                "ibrs",
                "ibpb",
                "svm",
                "vmx",
                "clwb",
            ]
        )
    ),
    st.one_of(st.none(), st.sets(st.sampled_from(["mds", "taa", "spectre_v1"]))),
)
spec_texts = st.sampled_from(
    [
        "kvm64",
        "host",
        "x86-64-v3",
        "Skylake-Server",
        "EPYC-Rome-v1",
        "kvm64,flags=+pcid",
        "kvm64,flags=+nested-virt",
        "x86-64-v3,flags=-aes;+spec-ctrl",
    ]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(spec_texts, min_size=1, max_size=5), st.lists(hosts_st, min_size=1, max_size=4))
def test_runnable_matrix_agrees_with_check_runnable(spec_list: list[str], hosts: list[HostCpu]) -> None:
    original = cpu_models.catalog
    cpu_models.catalog = lambda: MODELS
    try:
        engine.clear_caches()
        specs = [parse_cpu(s, models=MODELS) for s in spec_list]
        verdicts = [[engine.check_runnable(s, h) for h in hosts] for s in specs]
        assert engine.runnable_matrix(specs, hosts) == [[v.runnable for v in row] for row in verdicts]
        for row in verdicts:
            for v in row:
                assert v.runnable == (v.missing == ())
                assert list(v.missing) == sorted(v.missing)
    finally:
        cpu_models.catalog = original
        engine.clear_caches()
