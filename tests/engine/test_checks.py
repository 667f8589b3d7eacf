"""checks.evaluate: the engine's CPU verdict plus the cluster's own checks; exit codes and the
task-log line of the hook contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migration_guard.engine.checks import SKIP_TAG, evaluate, verdict_body
from migration_guard.engine.facts import NodeFacts, Precondition, VmFacts
from migration_guard.engine.hosts import host_from_proxmox

SCENARIO = json.loads((Path(__file__).parents[1] / "fixtures" / "service" / "scenario.json").read_text())


def node(name: str, *, online: bool = True, flags: bool = True, qemu: str = "9.2.0") -> NodeFacts:
    spec = next(n for n in SCENARIO["nodes"] if n["name"] == name)
    cpu = host_from_proxmox(name, {"model": spec["cpu"]["model"], "flags": " ".join(spec["cpu"]["flags"])})
    return NodeFacts(
        cluster="lab",
        name=name,
        online=online,
        cpu_model=spec["cpu"]["model"],
        cpu=cpu if (flags and online) else None,
        flag_source="cpuinfo" if flags else "none",
        qemu_version=qemu,
    )


def vm(
    cpu: str = "x86-64-v4",
    *,
    status: str = "running",
    tags: tuple[str, ...] = (),
    machine: str = "pc-q35-8.1+pve0",
) -> VmFacts:
    return VmFacts(
        cluster="lab",
        vmid=101,
        node="pve1",
        status=status,
        name="web01",
        tags=tags,
        cpu=cpu,
        running_machine=machine if status == "running" else "",
    )


def codes(v) -> list[str]:
    return [r.code for r in v.reasons]


def test_missing_flags_deny_with_suggestion_and_log_line():
    v = evaluate(vm(), node("pve1"), node("pve3"))
    assert v.verdict == "deny" and v.exit_code == 2 and v.deny_code == "missing-flags"
    assert "avx512f" in v.missing
    line = v.log_line()
    assert line.startswith("blocked migration of VM 101 (web01) from pve1 to pve3: pve3 lacks")
    assert "needed by cpu x86-64-v4" in line
    assert v.suggestion and line.endswith(f"; {v.suggestion}")
    assert v.suggestion.endswith("runs on both pve1 and pve3")
    assert "\n" not in line


def test_allow_on_equal_nodes():
    v = evaluate(vm(), node("pve1"), node("pve2"))
    assert v.verdict == "allow" and v.exit_code == 0
    assert v.log_line() == "allowed migration of VM 101 (web01) from pve1 to pve2 (cpu x86-64-v4)"


def test_skip_tag_allows_anything():
    v = evaluate(vm(tags=(SKIP_TAG,)), node("pve1"), node("pve3", online=False))
    assert v.verdict == "allow" and codes(v) == ["bypassed"]


def test_target_offline_is_other_deny():
    v = evaluate(vm(), node("pve1"), node("pve3", online=False))
    assert v.verdict == "deny" and codes(v) == ["target-offline"] and v.exit_code == 4


def test_machine_newer_than_target_qemu():
    v = evaluate(vm("x86-64-v2-AES", machine="pc-q35-9.2+pve0"), node("pve1"), node("pve2", qemu="8.1.5"))
    assert v.verdict == "deny" and "machine-unsupported" in codes(v) and v.exit_code == 3
    assert "update pve-qemu-kvm on pve2" in v.log_line()
    older = evaluate(vm("x86-64-v2-AES", machine="pc-q35-8.1+pve0"), node("pve1"), node("pve2", qemu="8.1.5"))
    assert older.verdict == "allow"
    stopped = evaluate(vm("x86-64-v2-AES", status="stopped"), node("pve1"), node("pve2", qemu="8.1.5"))
    assert stopped.verdict == "allow"


def test_vendor_mismatch_for_passthrough():
    v = evaluate(vm("host"), node("pve1"), node("pve4"))
    assert v.verdict == "deny" and v.deny_code == "vendor-mismatch" and v.exit_code == 1


@pytest.mark.parametrize(
    ("pre", "code"),
    [
        (Precondition(True, local_resources=("hostpci0",)), "local-resources"),
        (Precondition(True, unavailable_storages=("local-zfs",)), "storage-unavailable"),
    ],
)
def test_proxmox_precondition_blockers(pre, code):
    v = evaluate(vm("x86-64-v2-AES"), node("pve1"), node("pve2"), pre)
    assert v.verdict == "deny" and code in codes(v) and v.exit_code == 4


def test_precheck_skipped_is_said_not_denied():
    pre = Precondition(False, skipped_reason="the API token guard@pve!check lacks VM.Migrate")
    v = evaluate(vm("x86-64-v2-AES"), node("pve1"), node("pve2"), pre)
    assert v.verdict == "allow" and codes(v) == ["precheck-skipped"]


def test_target_without_flags_is_unknown():
    v = evaluate(vm(), node("pve1"), node("pve3", flags=False))
    assert v.verdict == "unknown" and codes(v) == ["flags-unknown"] and v.exit_code == 5
    assert v.log_line().startswith("could not judge migration of VM 101")


def test_bad_cpu_value_is_unknown_not_deny():
    v = evaluate(vm("NoSuchModel-v9"), node("pve1"), node("pve2"))
    assert v.verdict == "unknown" and v.exit_code == 5


def test_verdict_body_fields():
    v = evaluate(vm(), node("pve1"), node("pve3"))
    body = verdict_body(v, checked_at="2026-11-29T01:00:00.000Z", facts_age_s=1.234)
    assert {
        "vmid",
        "name",
        "source",
        "target",
        "verdict",
        "reasons",
        "cpu",
        "suggestion",
        "checked_at",
        "facts_age_s",
        "flag_source",
        "source_cluster",
        "target_cluster",
    } <= set(body)
    assert body["facts_age_s"] == 1.2 and body["flag_source"] == "cpuinfo"
    assert all(set(r) == {"code", "message"} for r in body["reasons"])
