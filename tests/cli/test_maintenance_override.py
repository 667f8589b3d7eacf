"""``migration-guard evacuate``, ``ha risks`` and ``override ...`` against the real service over HTTP
(the demo cluster on the Proxmox-shaped test server, real Redis): their output and exit codes."""

from __future__ import annotations

import json

import pytest

from migration_guard.api.app import create_app
from migration_guard.cli.main import main
from migration_guard.service.guard import GuardService
from migration_guard.store.redis_store import Store, connect
from tests.fakes.pve import pve_server, reader_for
from tests.support import service_stack as stack
from tests.support.redis_server import clean_db, redis_url

pytestmark = pytest.mark.integration

REDIS_URL = redis_url(12)
TOKEN = "cli-token"


@pytest.fixture(scope="module")
def pve():
    with pve_server("demo") as server:
        yield server


@pytest.fixture
def service(pve, monkeypatch):
    with clean_db(REDIS_URL):
        settings = stack.settings_for(
            pve, api_tokens=TOKEN, pve_cluster_name="demo", redis_url=REDIS_URL, pve_timeout=3
        )
        client, kind = connect(REDIS_URL)
        guard = GuardService(settings, reader_for(pve), Store(client, kind))
        with stack.serving(create_app(guard, (TOKEN,))) as url:
            monkeypatch.setenv("MIGRATION_GUARD_URL", url)
            monkeypatch.setenv("MIGRATION_GUARD_TOKEN", TOKEN)
            monkeypatch.delenv("SUDO_USER", raising=False)
            monkeypatch.setenv("USER", "alice")
            yield url


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_evacuate_prints_the_summary_then_the_stuck_vms_then_the_movable_ones(service, capsys):
    code, out, _ = run(capsys, "evacuate", "pve-xeon-csl")
    assert code == 1  # some VM stuck
    lines = out.splitlines()
    assert lines[0] == "pve-xeon-csl: 3 VMs: 1 can move, 2 stuck, 0 unknown (2 HA-managed, from HA rules)"
    assert lines[1] == "STUCK    VM 103 (db01)  cpu x86-64-v3  running"
    assert lines[2].startswith(
        "  why: HA (db-pinned) may only move it to pve-atom1 (pve-atom1: missing-flags)"
    )
    assert lines[3].startswith("  fix: set cpu: ")
    assert lines[4] == "STUCK    VM 104 (analytics01)  cpu x86-64-v4  running"
    assert lines[7] == (
        "MOVABLE  VM 102 (web01)  cpu x86-64-v2-AES  running  HA (no rule) -> "
        "pve-epyc1, pve-xeon-bdw, pve-atom1"
    )
    assert lines[-1] == "not ready for maintenance: 2 VM(s) would be stuck on pve-xeon-csl"
    code, out, _ = run(capsys, "evacuate", "pve-xeon-csl", "--json")
    assert code == 1 and json.loads(out)["summary"]["stuck"] == 2


def test_evacuate_an_unknown_node_is_bad_input(service, capsys):
    code, out, err = run(capsys, "evacuate", "pve-nowhere")
    assert code == 2 and out == ""
    assert err.startswith("migration-guard: node pve-nowhere: cluster demo has no node by that name")


def test_ha_risks(service, capsys):
    code, out, _ = run(capsys, "ha", "risks")
    assert code == 1
    assert out.splitlines()[:3] == [
        "demo: 2 HA VMs (HA rules), 1 at risk",
        "RISK  VM 103 (db01) on pve-xeon-csl  cpu x86-64-v3  db-pinned, strict",
        "  pve-atom1: DENY [missing-flags] pve-atom1 lacks abm, avx, avx2, bmi1, bmi2, f16c, fma needed by "
        "cpu x86-64-v3: QEMU refuses to start it there",
    ]


def test_ha_risks_when_ha_cannot_be_read_is_exit_3(pve, service, capsys):
    pve.set_faults(bad_answer="html", paths=("/cluster/ha/resources",))
    try:
        code, out, err = run(capsys, "ha", "risks")
    finally:
        pve.set_faults()
    assert code == 3 and out == "" and "HA resources" in err


def test_override_request_approve_list_and_the_decision(service, capsys, monkeypatch):
    code, out, _ = run(capsys, "override", "request", "104", "pve-xeon-bdw", "--reason", "no AVX-512 used")
    assert code == 0
    override_id = out.split()[1]
    assert out.splitlines()[0].startswith(f"override {override_id} requested by alice: VM 104 to ")
    code, _, err = run(capsys, "override", "approve", override_id)  # alice again ($USER)
    assert code == 1 and "refused: " in err and "a second person must approve it" in err
    monkeypatch.setenv("SUDO_USER", "bob")  # sudo's user comes first
    code, out, _ = run(capsys, "override", "approve", override_id)
    assert code == 0 and f"override {override_id} approved by bob" in out
    code, out, _ = run(capsys, "check", "104", "pve-xeon-bdw")
    assert code == 1  # a check never changes its verdict
    code, out, _ = run(capsys, "override", "list", "--json")
    [listed] = json.loads(out)["overrides"]
    assert (listed["status"], listed["requested_by"], listed["approved_by"]) == ("approved", "alice", "bob")
    code, out, _ = run(capsys, "override", "list")
    assert out.splitlines()[0].split() == [
        "ID",
        "STATUS",
        "VMID",
        "TARGET",
        "REQUESTED",
        "APPROVED",
        "EXPIRES",
        "REASON",
    ]
    assert out.splitlines()[1].split()[:6] == [override_id, "approved", "104", "pve-xeon-bdw", "alice", "bob"]


def test_override_bad_input(service, capsys, monkeypatch):
    assert run(capsys, "override", "approve", "not-an-id", "--as", "bob")[0] == 2
    assert run(capsys, "override", "request", "104", "pve-nowhere", "--reason", "x")[0] == 2
    assert run(capsys, "override", "request", "0104", "pve-xeon-bdw", "--reason", "x")[0] == 2
    monkeypatch.delenv("USER")
    code, _, err = run(capsys, "override", "request", "104", "pve-xeon-bdw", "--reason", "x")
    assert code == 2 and "pass --as NAME" in err
