"""The pure parts of what-if and drift: the shipped CPUs' names and levels, a node's fingerprint and
the difference of two, and which VMs a change blocks or frees (real /proc/cpuinfo dumps of
shared/migration_guard/data/cpus as the nodes)."""

from __future__ import annotations

import dataclasses

import pytest

from migration_guard.engine.cpu_spec import CpuSpec
from migration_guard.engine.cpus import LEVELS, find_cpu, shipped_cpus, short_name
from migration_guard.engine.drift import comparable, compare, facts_before, fingerprint, impact
from migration_guard.engine.facts import NodeFacts, VmFacts
from migration_guard.engine.runnable import check_runnable
from migration_guard.engine.whatif import imagined_node, what_if
from migration_guard.errors import InputError


@pytest.mark.parametrize(
    ("model_name", "short"),
    [
        ("AMD EPYC 9654 96-Core Processor", "EPYC 9654"),
        ("Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz", "Xeon Gold 6230"),
        ("Intel(R) Atom(TM) CPU C3758 @ 2.20GHz", "Atom C3758"),
        ("Intel(R) Xeon(R) CPU E5-2680 0 @ 2.70GHz", "Xeon E5-2680"),
        ("13th Gen Intel(R) Core(TM) i7-1370P", "Core i7-1370P"),
        ("AMD Ryzen 5 1600 Six-Core Processor", "Ryzen 5 1600"),
    ],
)
def test_short_names_are_what_an_operator_calls_the_cpu(model_name, short):
    assert short_name(model_name) == short


def test_each_shipped_cpus_level_is_the_best_it_runs():
    for cpu in shipped_cpus():
        runs = [lv for lv in LEVELS if check_runnable(CpuSpec(raw=lv, cputype=lv), cpu.host).runnable]
        assert cpu.level == (runs[0] if runs else "x86-64-v1"), cpu.name
        # the levels are a ladder: a CPU that runs one runs every lower one
        assert runs == list(LEVELS[len(LEVELS) - len(runs) :]), cpu.name


def test_a_part_number_alone_finds_its_cpu_and_an_unknown_one_names_close_ones():
    assert find_cpu("9654").name == "EPYC 9654"
    assert find_cpu("Intel(R) Atom(TM) CPU C3758 @ 2.20GHz").name == "Atom C3758"
    with pytest.raises(InputError, match="close names: .*Xeon Gold 6230"):
        find_cpu("Xeon Gold 6231")


def node(name: str, cpu_name: str, **kw) -> NodeFacts:
    host = find_cpu(cpu_name).as_node(name)
    return NodeFacts("lab", name, True, host.model, host, "cpuinfo", qemu_version="9.2", **kw)


def vm(vmid: int, where: str, cpu: str) -> VmFacts:
    return VmFacts(
        "lab", vmid, where, "running", name=f"vm{vmid}", cpu=cpu, running_machine="pc-q35-9.2+pve0"
    )


def without(n: NodeFacts, *flags: str) -> NodeFacts:
    assert n.cpu is not None
    cpu = dataclasses.replace(n.cpu, flags=n.cpu.flags - set(flags))
    return dataclasses.replace(n, cpu=cpu)


def test_the_same_facts_after_a_reboot_are_no_drift_and_first_sight_has_nothing_to_compare():
    a = node("pve1", "Xeon E5-2680 v4")
    rebooted = dataclasses.replace(a, fetched_at=a.fetched_at + 600, kernel_version="other uptime")
    assert compare(fingerprint(a), fingerprint(rebooted)) is None
    assert fingerprint(dataclasses.replace(a, online=False)) is None
    assert fingerprint(dataclasses.replace(a, cpu=None)) is None


def test_tsx_off_is_drift_naming_the_flags_and_blocks_the_broadwell_vm_on_the_other_node():
    bdw1, bdw2 = node("bdw1", "Xeon E5-2680 v4"), node("bdw2", "Xeon E5-2680 v4")
    after = without(bdw2, "hle", "rtm")
    change = compare(fingerprint(bdw2), fingerprint(after))
    assert change is not None and (change.vanished, change.appeared, change.changed) == (
        ("hle", "rtm"),
        (),
        {},
    )
    old = facts_before(after, fingerprint(bdw2))
    assert old.cpu == bdw2.cpu and old.name == "bdw2"
    vms = [
        vm(105, "bdw1", "Broadwell"),
        vm(102, "bdw1", "x86-64-v2-AES"),  # needs no TSX: unchanged
        vm(110, "bdw2", "host"),  # passes less through now: bdw1 still has all of it
        vm(111, "bdw1", "host"),  # passes hle, rtm through: bdw2 lacks them now
    ]
    blocked, movable = impact(old, after, {"bdw1": bdw1, "bdw2": after}, vms)
    assert [(m.vmid, m.direction, m.other) for m in blocked] == [(105, "to", "bdw1"), (111, "to", "bdw1")]
    assert "hle, rtm" in blocked[0].reason and "hle, rtm" in blocked[1].reason
    assert movable == []
    # and back: TSX on again frees both
    blocked, movable = impact(after, bdw2, {"bdw1": bdw1, "bdw2": bdw2}, vms)
    assert blocked == [] and [m.vmid for m in movable] == [105, 111]


def test_flags_read_from_another_source_are_a_new_baseline():
    a = fingerprint(node("pve1", "EPYC 9654"))
    b = dict(a, flag_source="qemu-kvm")
    assert not comparable(a, b) and comparable(a, a)


def test_what_if_the_atom_leaves_and_an_opteron_comes():
    nodes = [node("csl", "Xeon Gold 6230"), node("atom", "Atom C3758")]
    vms = [vm(103, "csl", "x86-64-v3"), vm(108, "atom", "x86-64-v2-AES"), vm(107, "csl", "kvm64")]
    gone = what_if(nodes, vms, remove=["atom"])
    assert gone.recommended_after != gone.recommended_before
    assert [v.vmid for v in gone.would_gain] == [103] and [v.vmid for v in gone.must_move] == [108]
    old = imagined_node("lab", find_cpu("Opteron 6134").as_node("k10"))
    added = what_if(nodes, vms, add=[old])
    assert added.recommended_after == "kvm64"
    assert [v.vmid for v in added.would_break] == [108]  # 103 already could not run everywhere
    assert [v.vmid for v in added.blocked_on_added] == [103]
