"""``migration-guard remote-migrate`` (issue 6): the qm argument reader and plan (pure), and the
command as a subprocess on a "source node" (a fake ``qm`` on PATH recording what it ran) against
the two-cluster service of tests/test_cross_cluster.py (AMD default cluster, Intel cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.errors import InputError
from shared.events import EVENTS_STREAM
from shared.remote_migrate import masked, parse_qm_args, parse_qm_config, plan_move
from tests.test_cross_cluster import TOKEN, UUID_HOST, UUID_V2, stack  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[1]
FAKE_QM = ROOT / "tests" / "fakes" / "qm-remote"
SECRET = "0b5e7f4e-1111-4222-8333-944455556666"
ENDPOINT = f"apitoken=PVEAPIToken=root@pam!migrate={SECRET},host=10.0.2.11,fingerprint=AA:BB"
HOOK = "local:snippets/migration-guard-hook"
QM_ARGS = ["--target-bridge", "vmbr0", "--target-storage", "local-lvm", "--online"]


# --- pure: the qm arguments and the plan --------------------------------------------------------


def test_qm_args_positionals_and_options():
    args = parse_qm_args(["9101", ENDPOINT, *QM_ARGS])
    assert (args.target_vmid, args.endpoint, args.online, args.delete) == (9101, ENDPOINT, True, False)
    assert args.argv == ("9101", ENDPOINT, *QM_ARGS)  # passed on unchanged
    same_vmid = parse_qm_args([ENDPOINT, "--target-bridge=1", "--target-storage", "a:b", "--delete", "1"])
    assert (same_vmid.target_vmid, same_vmid.delete, same_vmid.online) == (None, True, False)
    assert parse_qm_args([ENDPOINT, *QM_ARGS, "--delete"]).delete is True
    assert parse_qm_args([ENDPOINT, *QM_ARGS, "--delete", "0"]).delete is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*QM_ARGS], "the target endpoint is missing"),
        ([ENDPOINT, "--target-bridge", "vmbr0"], "--target-storage is required"),
        ([ENDPOINT, "--target-storage", "x"], "--target-bridge is required"),
        (["abc", ENDPOINT, *QM_ARGS], "TARGET-VMID 'abc' is not a VM id"),
        (["host=x", *QM_ARGS], "needs apitoken=... and host=..."),
        ([ENDPOINT, *QM_ARGS, "--with-local-disks"], "has no option --with-local-disks"),
        ([ENDPOINT, *QM_ARGS, "--online", "maybe", "x"], "expected [TARGET-VMID] TARGET-ENDPOINT"),
    ],
)
def test_qm_args_qm_would_refuse_are_refused_first(argv, message):
    with pytest.raises(InputError, match=None) as err:
        parse_qm_args(argv)
    assert message in str(err.value)


def test_masked_hides_the_token_secret():
    shown = masked(["qm", "remote-migrate", "101", ENDPOINT])
    assert SECRET not in shown
    assert "apitoken=PVEAPIToken=root@pam!migrate=***,host=10.0.2.11" in shown


def test_plan_and_config_reading():
    config = parse_qm_config(f"cpu: host\nhookscript: {HOOK}\nsmbios1: uuid=X\n\n[snap]\nhookscript: old\n")
    plan = plan_move(
        101,
        config,
        parse_qm_args(["9101", ENDPOINT, *QM_ARGS]),
        source_node="pva1",
        source_cluster="amd",
        target_cluster="intel",
        target_node="pvb1",
    )
    assert plan.detach_cmd() == ["qm", "set", "101", "--delete", "hookscript"]
    assert plan.restore_cmd() == ["qm", "set", "101", "--hookscript", HOOK, "--skiplock", "1"]
    assert plan.migrate_cmd() == ["qm", "remote-migrate", "101", "9101", ENDPOINT, *QM_ARGS]
    assert plan.reattach_cmd() == f"qm set 9101 --hookscript {HOOK}"
    assert plan.keep_source
    with pytest.raises(InputError, match="VM 101 is locked \\(backup\\)"):
        plan_move(
            101,
            {"lock": "backup"},
            plan.qm,
            source_node="a",
            source_cluster="",
            target_cluster="b",
            target_node="c",
        )


# --- the command on a source node ---------------------------------------------------------------


@pytest.fixture
def node(tmp_path):
    """A source node of the AMD cluster: a fake qm on PATH over a state file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qm").symlink_to(FAKE_QM)
    state = tmp_path / "state.json"
    vms = {
        "101": {
            "config": {"cpu": "host", "name": "build01", "hookscript": HOOK, "smbios1": f"uuid={UUID_HOST}"}
        },
        "102": {
            "config": {
                "cpu": "x86-64-v2-AES",
                "name": "db01",
                "hookscript": HOOK,
                "smbios1": f"uuid={UUID_V2}",
            }
        },
    }
    state.write_text(json.dumps({"node": "pva1", "vms": vms, "calls": []}))
    return {"bin": bin_dir, "state": state, "pending": tmp_path / "pending-reattach", "tmp": tmp_path}


def read_state(node) -> dict:
    return json.loads(node["state"].read_text())


def set_state(node, **changes) -> None:
    state = read_state(node)
    state.update(changes)
    node["state"].write_text(json.dumps(state))


def remote_migrate(node, url, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{node['bin']}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "FAKE_PVE_STATE": str(node["state"]),
        "MIGRATION_GUARD_URL": url,
        "MIGRATION_GUARD_TOKEN": TOKEN,
        "MIGRATION_GUARD_NODE": "pva1",
        "MIGRATION_GUARD_PENDING_REATTACH": str(node["pending"]),
    }
    env.pop("MIGRATION_GUARD_QM", None)
    return subprocess.run(
        [sys.executable, "-m", "shared.cli.main", "remote-migrate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def calls(node) -> list[list[str]]:
    return [c[1:] for c in read_state(node)["calls"]]


@pytest.mark.integration
def test_host_vm_amd_to_intel_is_refused_and_nothing_runs(stack, node):  # noqa: F811
    before = stack["redis"].xlen(EVENTS_STREAM)
    proc = remote_migrate(
        node,
        stack["url"],
        "101",
        "--target-cluster",
        "intel",
        "--target-node",
        "pvb1",
        "--",
        "9101",
        ENDPOINT,
        *QM_ARGS,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith(
        "migration-guard: refused: blocked migration of VM 101 (build01) from amd/pva1 to intel/pvb1: "
    )
    assert "[vendor-mismatch]" in proc.stdout and "nothing was changed" in proc.stdout
    assert calls(node) == [["config", "101"]]  # no qm set, no qm remote-migrate
    assert read_state(node)["vms"]["101"]["config"]["hookscript"] == HOOK
    ((_, fields),) = stack["redis"].xrange(EVENTS_STREAM, "-", "+")[before:]
    event = json.loads(fields["event"])
    assert (event["vmid"], event["target_cluster"], event["enforced"]) == (101, "intel", True)


@pytest.mark.integration
def test_v2_aes_vm_moves_with_its_hookscript_handled(stack, node):  # noqa: F811
    proc = remote_migrate(
        node,
        stack["url"],
        "102",
        "--target-cluster",
        "intel",
        "--target-node",
        "pvb2",
        "9102",
        ENDPOINT,
        *QM_ARGS,  # no "--": our options are told apart from qm's
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls(node) == [
        ["config", "102"],
        ["set", "102", "--delete", "hookscript"],
        ["remote-migrate", "102", "9102", ENDPOINT, *QM_ARGS],
        ["set", "102", "--hookscript", HOOK, "--skiplock", "1"],
    ]
    state = read_state(node)
    assert state["hookscript_at_migrate"] is None  # the line was gone while the config travelled
    assert state["vms"]["102"]["config"]["hookscript"] == HOOK  # back on the kept source
    assert (
        f"Re-attach it as root on pvb2 (the snippet must exist on the target cluster's nodes): "
        f"qm set 9102 --hookscript {HOOK}" in proc.stdout
    )
    assert SECRET not in proc.stdout + proc.stderr
    (line,) = node["pending"].read_text().splitlines()
    assert "vmid=102 source=amd/pva1 target=intel/pvb2 target_vmid=9102" in line
    assert line.endswith(f"qm set 9102 --hookscript {HOOK}")


@pytest.mark.integration
def test_failed_move_puts_the_hookscript_back_at_once(stack, node):  # noqa: F811
    set_state(node, remote_migrate_exit=255)
    proc = remote_migrate(
        node,
        stack["url"],
        "102",
        "--target-cluster",
        "intel",
        "--target-node",
        "pvb2",
        "--",
        ENDPOINT,
        *QM_ARGS,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert calls(node)[-1] == ["set", "102", "--hookscript", HOOK, "--skiplock", "1"]
    assert read_state(node)["vms"]["102"]["config"]["hookscript"] == HOOK
    assert "qm remote-migrate failed (exit code 255): VM 102 stays on pva1" in proc.stdout
    assert not node["pending"].exists()


@pytest.mark.integration
def test_delete_leaves_only_the_reattach_instruction(stack, node):  # noqa: F811
    proc = remote_migrate(
        node,
        stack["url"],
        "102",
        "--target-cluster",
        "intel",
        "--target-node",
        "pvb2",
        "--",
        ENDPOINT,
        *QM_ARGS,
        "--delete",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "102" not in read_state(node)["vms"]
    assert [c[0] for c in calls(node)] == ["config", "set", "remote-migrate"]
    assert f"qm set 102 --hookscript {HOOK}" in node["pending"].read_text()


@pytest.mark.integration
def test_unknown_cluster_and_unreachable_service_change_nothing(stack, node):  # noqa: F811
    proc = remote_migrate(
        node, stack["url"], "102", "--target-cluster", "arm", "--target-node", "x1", "--", ENDPOINT, *QM_ARGS
    )
    assert proc.returncode == 2 and "no cluster 'arm'" in proc.stderr
    proc = remote_migrate(
        node,
        "http://127.0.0.1:9",
        "102",
        "--target-cluster",
        "intel",
        "--target-node",
        "pvb2",
        "--",
        ENDPOINT,
        *QM_ARGS,
    )
    assert proc.returncode == 3 and "cannot reach the service" in proc.stderr
    assert calls(node) == [["config", "102"], ["config", "102"]]


def test_bad_arguments_are_refused_before_qm_runs(node):
    proc = remote_migrate(
        node,
        "http://127.0.0.1:9",
        "102",
        "--target-cluster",
        "intel",
        "--target-node",
        "pvb2",
        "--",
        ENDPOINT,
        "--target-bridge",
        "vmbr0",
    )
    assert proc.returncode == 2 and "--target-storage is required" in proc.stderr
    proc = remote_migrate(node, "http://127.0.0.1:9", "102", "--", ENDPOINT, *QM_ARGS)
    assert proc.returncode == 2 and "--target-cluster and --target-node are required" in proc.stderr
    assert calls(node) == []
