"""The cluster's custom CPU model (engine/baseline.py) and the physical address width
(engine/phys_bits.py), on real shipped CPUs: starts nothing.

The main property: every flag the generated model lists is offered by every chosen node's KVM
facts, checked directly on QEMU's own recorded KVM views (data/kvm_expansions) and through the
engine's offer for nodes judged on /proc/cpuinfo; and the model, read back from its
cpu-models.conf text, runs on every node."""

from __future__ import annotations

import itertools
import json
from importlib import resources

import pytest

from migration_guard.engine import baseline, phys_bits
from migration_guard.engine.cpu_spec import CpuSpec, parse_cpu, parse_custom_models
from migration_guard.engine.flags import canonical, rules
from migration_guard.engine.hosts import HostCpu, host_from_json, host_from_qemu_flags, vendor_of
from migration_guard.engine.offers import known_bit, offer, requirement
from migration_guard.engine.verdicts import check_runnable

DATA = resources.files("migration_guard").joinpath("data")


def cpu(ref: str) -> HostCpu:
    return host_from_json(json.loads(DATA.joinpath("cpus", f"{ref}.json").read_text()), ref)


def kvm(ref: str) -> HostCpu:
    """A node judged on QEMU's own KVM view: the recorded host expansion, names normalised the way
    pvestatd stores them (``.`` and ``_`` become ``-``)."""
    rec = json.loads(DATA.joinpath("kvm_expansions", f"{ref}.json").read_text())
    names = {p.replace("_", "-").replace(".", "-") for p in rec["true_props"]}
    # QEMU's own spelling of the dotted names (sse4.1, sse4.2) comes back through canonical()
    flags = {canonical(n) for n in names}
    vendor = vendor_of(rec["vendor"], rec["model_id"], flags)
    return host_from_qemu_flags(ref, rec["model_id"], flags, vendor)


KVM_VIEWS = [
    "intel-skylake-sp-gold-6130",
    "intel-cascadelake-sp-silver-4214r",
    "intel-broadwell-ep-xeon-e5-2650v4",
    "amd-zen1-epyc-7601",
    "amd-zen2-rome-epyc-7502",
]
CPUINFO = [
    "intel-cascadelake-sp-gold-6230",
    "intel-skylake-sp-gold-6130",
    "intel-broadwell-ep-xeon-e5-2680v4",
    "intel-kabylake-r-core-i7-8650u",
    "intel-icelake-sp-gold-5318y",
    "intel-denverton-atom-c3758",
    "amd-zen2-epyc-7702",
    "amd-zen4-genoa-epyc-9654",
]
KVM_GROUPS = [list(g) for n in (1, 2, 3) for g in itertools.combinations(KVM_VIEWS, n)]
CPUINFO_GROUPS = [list(g) for g in itertools.combinations(CPUINFO, 3)]


def assert_every_flag_is_offered(hosts: list[HostCpu], made: baseline.Plan) -> None:
    vendor = requirement(CpuSpec(raw=made.reported_model, cputype=made.reported_model)).vendor
    for host in hosts:
        offered = offer(host).for_model(vendor)
        for flag in made.flags:
            assert known_bit(flag) and offered & known_bit(flag), f"{host.name} does not offer {flag}"
    # read back as Proxmox would store it, the model runs on every node
    model = parse_custom_models(made.section)[made.name]
    assert model.reported_model == made.reported_model
    assert [f for f, on in model.flags if on] == list(made.flags)
    spec = parse_cpu(f"custom-{made.name}", {made.name: model})
    for host in hosts:
        run = check_runnable(spec, host)
        assert run.runnable, (host.name, run.missing)


@pytest.mark.parametrize("refs", KVM_GROUPS, ids=lambda g: "+".join(g))
def test_every_flag_is_in_every_nodes_recorded_kvm_view(refs: list[str]) -> None:
    hosts = [kvm(r) for r in refs]
    made = baseline.plan(hosts)
    assert_every_flag_is_offered(hosts, made)
    for host in hosts:  # the flags appear verbatim in each QEMU report
        assert set(made.flags) <= set(host.flags), host.name


@pytest.mark.parametrize("refs", CPUINFO_GROUPS, ids=lambda g: "+".join(g))
def test_every_flag_is_offered_by_nodes_judged_on_cpuinfo(refs: list[str]) -> None:
    hosts = [cpu(r) for r in refs]
    assert_every_flag_is_offered(hosts, baseline.plan(hosts))


def test_never_an_unmigratable_flag_and_it_says_so() -> None:
    hosts = [cpu("intel-skylake-sp-gold-6130"), cpu("intel-cascadelake-sp-gold-6230")]
    invtsc = known_bit("invtsc")
    assert all(offer(h).bits & invtsc for h in hosts)  # constant_tsc + nonstop_tsc: KVM offers it
    made = baseline.plan(hosts)
    assert not set(made.flags) & rules().unmigratable
    left = {x.flag: x.why for x in made.left_out}
    assert "unmigratable" in left["invtsc"]
    assert "invtsc" not in made.section
    assert "vmx" in left and "nested-virt" in left["vmx"]


def test_the_model_is_richer_than_the_best_generic_level() -> None:
    hosts = [cpu("intel-cascadelake-sp-gold-6230"), cpu("intel-broadwell-ep-xeon-e5-2680v4")]
    made = baseline.plan(hosts)
    assert made.level == "x86-64-v3"  # Broadwell has no AVX-512
    assert made.reported_model.startswith("Broadwell")
    assert {"hle", "rtm", "adx", "rdseed"} <= set(made.gains)  # both have TSX on
    level = requirement(CpuSpec(raw="x86-64-v3", cputype="x86-64-v3"))
    assert not any(level.bits & known_bit(g) for g in made.gains)


def test_nodes_of_both_vendors_get_a_generic_reported_model() -> None:
    made = baseline.plan([cpu("amd-zen2-epyc-7702"), cpu("intel-cascadelake-sp-gold-6230")])
    assert made.reported_model in ("kvm64", "qemu64")  # a named model would force one vendor
    assert {"avx2", "fma", "bmi2"} <= set(made.flags)
    assert made.level == "x86-64-v3"


def test_phys_bits_is_the_narrowest_node_and_left_out_when_one_is_unknown() -> None:
    made = baseline.plan([cpu("intel-cascadelake-sp-gold-6230"), cpu("intel-kabylake-r-core-i7-8650u")])
    assert made.phys_bits == 39
    assert "\tphys-bits 39\n" in made.section
    unknown = baseline.plan([cpu("intel-cascadelake-sp-gold-6230"), cpu("intel-denverton-atom-c3758")])
    assert unknown.phys_bits is None and "phys-bits" not in unknown.section
    assert "intel-denverton-atom-c3758 is unknown" in unknown.notes[0]


def test_the_section_is_written_as_proxmox_writes_it() -> None:
    made = baseline.plan([cpu("intel-kabylake-r-core-i7-8650u")], name="lab")
    lines = made.section.split("\n")
    assert lines[0] == "cpu-model: lab"
    keys = [line.split(" ")[0].strip() for line in lines[1:] if line]
    assert keys == sorted(keys) and all(line.startswith("\t") for line in lines[1:] if line)
    assert made.section.endswith("\n\n")


def test_a_lower_level_vm_gains_and_a_richer_one_does_not() -> None:
    made = baseline.plan([cpu("intel-cascadelake-sp-gold-6230"), cpu("intel-skylake-sp-gold-6130")])
    gained = baseline.gain_of(parse_cpu("x86-64-v2-AES"), made)
    assert gained and "avx512f" in gained
    assert baseline.gain_of(parse_cpu("host"), made) is None
    assert baseline.gain_of(parse_cpu("Cascadelake-Server"), made) is None  # has vnni the model lacks


# --- phys-bits --------------------------------------------------------------------------------


def with_bits(host: HostCpu, bits: int | None) -> HostCpu:
    from dataclasses import replace

    return replace(host, phys_bits=bits)


def test_the_recorded_widths_come_from_bare_metal_dumps() -> None:
    assert phys_bits.recorded_width("Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz") == 39
    assert phys_bits.recorded_width("AMD EPYC 9654 96-Core Processor") == 52
    assert phys_bits.recorded_width("Intel(R) Atom(TM) CPU C3758 @ 2.20GHz") is None  # not recorded
    assert cpu("intel-kabylake-r-core-i7-8650u").phys_bits == 39


@pytest.mark.parametrize(
    ("cpu_line", "running", "source", "target", "code"),
    [
        ("x86-64-v2-AES,phys-bits=host", True, 46, 39, "phys-bits"),
        ("x86-64-v2-AES,phys-bits=host", True, 39, 46, None),
        ("x86-64-v2-AES,phys-bits=host", False, 46, 39, None),  # a fresh start takes the target's
        ("x86-64-v2-AES,phys-bits=42", False, 46, 39, "phys-bits"),
        ("host", True, 46, 39, "phys-bits"),  # QEMU gives cpu host the host's width
        ("x86-64-v2-AES", True, 46, 39, None),  # QEMU's default 40 bits on every node
        ("x86-64-v2-AES,phys-bits=40", True, 46, None, "phys-bits-unknown"),
        ("x86-64-v2-AES,phys-bits=host", True, None, 39, "phys-bits-unknown"),
        ("host", True, None, 39, None),  # implied by cpu host: no notice when a width is unknown
        ("host,phys-bits=host", True, 46, None, "phys-bits-unknown"),
    ],
)
def test_phys_bits_reasons(cpu_line, running, source, target, code) -> None:
    src = with_bits(cpu("intel-cascadelake-sp-gold-6230"), source)
    dst = with_bits(cpu("intel-kabylake-r-core-i7-8650u"), target)
    found = phys_bits.reasons(parse_cpu(cpu_line), src, dst, running=running)
    assert [r.code for r in found] == ([code] if code else [])


def test_a_custom_models_phys_bits_counts_and_the_vms_own_wins() -> None:
    models = parse_custom_models("cpu-model: wide\n\treported-model kvm64\n\tphys-bits 46\n\tlevel 30\n")
    src = cpu("intel-cascadelake-sp-gold-6230")
    dst = cpu("intel-kabylake-r-core-i7-8650u")
    denied = phys_bits.reasons(parse_cpu("custom-wide", models), src, dst, running=True)
    assert [r.code for r in denied] == ["phys-bits"] and "phys-bits=46" in denied[0].message
    narrowed = phys_bits.reasons(parse_cpu("custom-wide,phys-bits=39", models), src, dst, running=True)
    assert narrowed == []
