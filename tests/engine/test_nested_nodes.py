"""A node that is itself a VM (``hypervisor`` in its /proc/cpuinfo flags) and judged on that
cpuinfo: every answer about it says its KVM may offer less (a ``facts`` note and the hook line);
its KVM view from /cluster/qemu/cpu-flags, when Proxmox gives it, is exact and needs no note."""

from __future__ import annotations

from migration_guard.demo.pve_scenario import cpu_fixture
from migration_guard.engine.checks import evaluate, nested_note, verdict_body
from migration_guard.engine.facts import NodeFacts, VmFacts
from migration_guard.engine.hosts import HostCpu, host_from_json

NESTED_REF = "amd-zen3-milan-x-epyc-7v73x"  # a dump taken inside a VM (Azure): hypervisor flag
BARE_REF = "amd-zen2-epyc-7702"


def node(name: str, ref: str, source: str = "cpuinfo") -> NodeFacts:
    fx = dict(cpu_fixture(ref), name=name)
    cpu = host_from_json(fx, name)
    if source == "qemu-kvm":
        cpu = HostCpu(name, cpu.vendor, cpu.model, frozenset({"fpu", "sse2", "lm"}), flag_source="qemu-kvm")
    return NodeFacts("lab", name, True, cpu_model=cpu.model, cpu=cpu, flag_source=source)


def vm(cpu: str = "x86-64-v2-AES", node_name: str = "pve1") -> VmFacts:
    return VmFacts("lab", 101, node_name, "running", name="web01", cpu=cpu)


def test_the_fixture_is_a_nested_dump():
    assert "hypervisor" in cpu_fixture(NESTED_REF)["flags"]
    assert "hypervisor" not in cpu_fixture(BARE_REF)["flags"]


def test_a_nested_target_judged_on_cpuinfo_is_named_in_the_answer_and_the_line():
    v = evaluate(vm(), node("pve1", BARE_REF), node("pve-nested", NESTED_REF))
    assert v.verdict == "allow"
    (note,) = v.notes
    assert note.code == "nested-node" and "pve-nested is itself a virtual machine" in note.message
    assert "may offer far less than its cpuinfo shows" in note.message
    body = verdict_body(v, checked_at="2026-12-06T20:00:00Z", facts_age_s=1.0)
    assert body["facts"] == [{"code": "nested-node", "message": note.message}]
    assert all(r["code"] != "nested-node" for r in body["reasons"])  # a note, not a verdict reason
    assert v.log_line().startswith("allowed migration of VM 101 (web01) from pve1 to pve-nested")
    assert "note: pve-nested is itself a virtual machine" in v.log_line()


def test_a_veto_line_about_a_nested_target_says_so_after_the_reason():
    v = evaluate(vm("EPYC-Genoa"), node("pve1", BARE_REF), node("pve-nested", NESTED_REF))
    assert v.verdict == "deny"
    line = v.log_line()
    assert line.startswith("blocked migration of VM 101 (web01) from pve1 to pve-nested: pve-nested lacks ")
    assert line.index("lacks") < line.index("note: pve-nested is itself a virtual machine")


def test_a_nested_source_is_named_when_its_cpu_is_passed_through():
    v = evaluate(vm("host", "pve-nested"), node("pve-nested", NESTED_REF), node("pve2", NESTED_REF))
    assert [n.message.split(" ")[0] for n in v.notes] == ["pve-nested", "pve2"]
    source = node("pve-nested", NESTED_REF)
    named = evaluate(vm("x86-64-v2-AES", "pve-nested"), source, node("pve2", BARE_REF))
    assert named.notes == ()  # a named type is judged on the target alone: the source's CPU is not used


def test_the_kvm_view_of_a_nested_node_needs_no_note():
    assert nested_note(node("pve-nested", NESTED_REF, source="qemu-kvm")) is None
    assert nested_note(node("pve1", BARE_REF)) is None
    v = evaluate(vm(), node("pve1", BARE_REF), node("pve2", BARE_REF))
    assert v.notes == () and "facts" not in verdict_body(v, checked_at="x", facts_age_s=0.0)


def test_the_slack_answer_shows_the_nested_note():
    from migration_guard_bot.answers import verdict_answer

    v = evaluate(vm(), node("pve1", BARE_REF), node("pve-nested", NESTED_REF))
    body = verdict_body(v, checked_at="2026-12-06T20:00:00Z", facts_age_s=1.0)
    answer = verdict_answer(body)
    assert "pve-nested is itself a virtual machine" in answer.text
    assert "nested-node" in str(answer.blocks)


def test_the_cli_says_a_host_file_is_a_nested_node(tmp_path):
    import json as _json
    import subprocess
    import sys
    from pathlib import Path

    fx = dict(cpu_fixture(NESTED_REF), name="pve-nested")
    nested = tmp_path / "nested.json"
    nested.write_text(_json.dumps(fx))
    bare = tmp_path / "bare.json"
    bare.write_text(_json.dumps(dict(cpu_fixture(BARE_REF), name="pve1")))
    repo = Path(__file__).resolve().parents[2]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "migration_guard.cli.main", "cpu", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=repo,
        )

    checked = cli("check", "--host", str(nested), "--cpu", "x86-64-v2-AES")
    assert checked.returncode == 0, checked.stderr
    assert "note: pve-nested is itself a virtual machine" in checked.stdout
    moved = cli("migrate", "--json", "--source", str(bare), "--target", str(nested), "--cpu", "x86-64-v2-AES")
    assert _json.loads(moved.stdout)["facts"][0]["code"] == "nested-node"
    back = cli("migrate", "--json", "--source", str(nested), "--target", str(bare), "--cpu", "x86-64-v2-AES")
    assert "facts" not in _json.loads(back.stdout)  # a named type: the source's CPU is not judged
