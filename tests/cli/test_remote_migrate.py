"""``migration-guard remote-migrate``: the qm argument reader and plan (pure), and the
command as a subprocess on a "source node" (a fake ``qm`` on PATH recording what it ran) against
the two-cluster service of tests/system/test_cross_cluster.py (AMD default cluster, Intel cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from migration_guard.cli.remote_migrate import masked, parse_qm_args, parse_qm_config, plan_move
from migration_guard.errors import InputError
from migration_guard.store.events import EVENTS_STREAM
from tests.system.test_cross_cluster import TOKEN, UUID_HOST, UUID_V2, stack  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
FAKE_QM = ROOT / "tests" / "fakes" / "qm-remote"
SECRET = "0b5e7f4e-1111-4222-8333-944455556666"
ENDPOINT = f"apitoken=PVEAPIToken=root@pam!migrate={SECRET},host=10.0.2.11,fingerprint=AA:BB"
HOOK = "local:snippets/migration-guard-hook"
QM_ARGS = ["--target-bridge", "vmbr0", "--target-storage", "local-lvm", "--online"]


# --- pure: the qm arguments and the plan --------------------------------------------------------


def test_qm_args_positionals_and_options():
    args = parse_qm_args(["9101", ENDPOINT, *QM_ARGS])
    assert (args.target_vmid, args.endpoint, args.online, args.delete) == (9101, ENDPOINT, True, False)
    assert args.options == tuple(QM_ARGS)  # passed on unchanged
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
        (["00200", ENDPOINT, *QM_ARGS], "TARGET-VMID '00200' is not a VM id"),
        (["host=x", *QM_ARGS], "needs apitoken=... and host=..."),
        ([ENDPOINT, *QM_ARGS, "--with-local-disks"], "has no option --with-local-disks"),
        ([ENDPOINT, *QM_ARGS, "--online", "maybe", "x"], "in qm's order, VMID [TARGET-VMID] TARGET-ENDPOINT"),
    ],
)
def test_qm_args_qm_would_refuse_are_refused_first(argv, message):
    with pytest.raises(InputError, match=None) as err:
        parse_qm_args(argv)
    assert message in str(err.value)


def plan_for(qm_argv: list[str], vmid: int = 101, config: dict | None = None):
    return plan_move(
        vmid,
        {"hookscript": HOOK} if config is None else config,
        parse_qm_args(qm_argv),
        source_node="pva1",
        source_cluster="amd",
        target_cluster="intel",
        target_node="pvb1",
    )


@pytest.mark.parametrize(
    ("argv", "target_vmid"),
    [
        ([ENDPOINT, *QM_ARGS], "101"),  # no target VMID: the same one, written out for qm
        (["9101", ENDPOINT, *QM_ARGS], "9101"),
        ([*QM_ARGS, "9101", ENDPOINT], "9101"),  # options first
        ([f"--target-endpoint={ENDPOINT}", "--target-vmid", "9101", *QM_ARGS], "9101"),
        (["9101", "--target-endpoint", ENDPOINT, *QM_ARGS], "9101"),
    ],
)
def test_qm_gets_its_positional_arguments_in_its_order(argv, target_vmid):
    """qm maps positionals in order to vmid, target-vmid, target-endpoint (qemu-server qm.pm): an
    endpoint right after the VMID would be read as the target VMID."""
    assert plan_for(argv).migrate_cmd() == ["qm", "remote-migrate", "101", target_vmid, ENDPOINT, *QM_ARGS]


def test_endpoint_before_the_target_vmid_is_refused_without_showing_its_secret():
    with pytest.raises(InputError) as err:
        parse_qm_args([ENDPOINT, "9101", *QM_ARGS])
    assert "in qm's order, VMID [TARGET-VMID] TARGET-ENDPOINT" in str(err.value)
    assert SECRET not in str(err.value)


def test_masked_hides_the_token_secret():
    shown = masked(["qm", "remote-migrate", "101", ENDPOINT])
    assert SECRET not in shown
    assert "apitoken=PVEAPIToken=root@pam!migrate=***,host=10.0.2.11" in shown


def test_plan_and_config_reading():
    config = parse_qm_config(f"cpu: host\nhookscript: {HOOK}\nsmbios1: uuid=X\n\n[snap]\nhookscript: old\n")
    plan = plan_for(["9101", ENDPOINT, *QM_ARGS], config=config)
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


def remote_migrate(node, url, *args: str, **extra: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{node['bin']}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "FAKE_PVE_STATE": str(node["state"]),
        "MIGRATION_GUARD_URL": url,
        "MIGRATION_GUARD_TOKEN": TOKEN,
        "MIGRATION_GUARD_NODE": "pva1",
        "MIGRATION_GUARD_PENDING_REATTACH": str(node["pending"]),
        **extra,
    }
    env.pop("MIGRATION_GUARD_QM", None)
    return subprocess.run(
        [sys.executable, "-m", "migration_guard.cli.main", "remote-migrate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def calls(node) -> list[list[str]]:
    return [c[1:] for c in read_state(node)["calls"]]


def to_intel(target_node: str, *qm_args: str) -> tuple[str, ...]:
    """Our options for a move to intel/<target_node>, then `--` and qm's own arguments."""
    return ("--target-cluster", "intel", "--target-node", target_node, "--", *qm_args)


@pytest.mark.integration
def test_host_vm_amd_to_intel_is_refused_and_nothing_runs(stack, node):  # noqa: F811
    before = stack["redis"].xlen(EVENTS_STREAM)
    proc = remote_migrate(node, stack["url"], "101", *to_intel("pvb1", "9101", ENDPOINT, *QM_ARGS))
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
    proc = remote_migrate(node, stack["url"], "102", *to_intel("pvb2", ENDPOINT, *QM_ARGS))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert calls(node)[-1] == ["set", "102", "--hookscript", HOOK, "--skiplock", "1"]
    assert read_state(node)["vms"]["102"]["config"]["hookscript"] == HOOK
    assert "qm remote-migrate failed (exit code 255): VM 102 stays on pva1" in proc.stdout
    assert not node["pending"].exists()


@pytest.mark.integration
def test_delete_leaves_only_the_reattach_instruction(stack, node):  # noqa: F811
    proc = remote_migrate(node, stack["url"], "102", *to_intel("pvb2", ENDPOINT, *QM_ARGS, "--delete"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "102" not in read_state(node)["vms"]
    assert [c[0] for c in calls(node)] == ["config", "set", "remote-migrate"]
    assert calls(node)[2] == ["remote-migrate", "102", "102", ENDPOINT, *QM_ARGS, "--delete"]
    assert f"qm set 102 --hookscript {HOOK}" in node["pending"].read_text()


@pytest.mark.integration
def test_unknown_cluster_and_unreachable_service_change_nothing(stack, node):  # noqa: F811
    proc = remote_migrate(
        node, stack["url"], "102", "--target-cluster", "arm", "--target-node", "x1", "--", ENDPOINT, *QM_ARGS
    )
    assert proc.returncode == 2 and "no cluster 'arm'" in proc.stderr
    proc = remote_migrate(node, "http://127.0.0.1:9", "102", *to_intel("pvb2", ENDPOINT, *QM_ARGS))
    assert proc.returncode == 3
    assert "the migration-guard service at http://127.0.0.1:9 is unreachable" in proc.stderr
    assert calls(node) == [["config", "102"], ["config", "102"]]


def test_bad_arguments_are_refused_before_qm_runs(node):
    proc = remote_migrate(
        node, "http://127.0.0.1:9", "102", *to_intel("pvb2", ENDPOINT, "--target-bridge", "vmbr0")
    )
    assert proc.returncode == 2 and "--target-storage is required" in proc.stderr
    proc = remote_migrate(node, "http://127.0.0.1:9", "102", "--", ENDPOINT, *QM_ARGS)
    assert proc.returncode == 2 and "--target-cluster and --target-node are required" in proc.stderr
    assert calls(node) == []


@pytest.mark.integration
def test_qms_order_without_a_target_vmid_moves_the_vm(stack, node):  # noqa: F811
    """`migration-guard remote-migrate 102 ENDPOINT ...` reads like `qm remote-migrate`: qm itself
    gets the target VMID written out, else it takes the endpoint for it and refuses."""
    proc = remote_migrate(
        node, stack["url"], "102", ENDPOINT, *QM_ARGS, "--target-cluster", "intel", "--target-node", "pvb2"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls(node)[2] == ["remote-migrate", "102", "102", ENDPOINT, *QM_ARGS]
    assert "qm set 102 --hookscript" in node["pending"].read_text()


# --- what qm would refuse is refused before anything changes -------------------------------------

HA_RESOURCES = """# HA resources
ct: 102
\tstate started

vm: 1020
\tstate started

vm: 102
\tgroup prefer-a
\tstate started
"""
REPLICATION = """local: 101-0
\ttarget pva2
\tschedule */15

local: 102-1
\ttarget pva2
\tdisable 1
"""


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        (
            {"ha/resources.cfg": HA_RESOURCES},
            "VM 102 is managed by HA (vm:102 in {etc}/ha/resources.cfg); qm remote-migrate refuses it: "
            "'cannot remote-migrate VM that is configured for HA'. Remove it from HA first "
            "(ha-manager remove vm:102)",
        ),
        (
            {"replication.cfg": REPLICATION},
            "VM 102 is replicated (job 102-1 in {etc}/replication.cfg); qm remote-migrate refuses it: "
            "'cannot remote-migrate replicated VM'. Remove the job first (pvesr delete 102-1)",
        ),
    ],
)
def test_ha_managed_or_replicated_vm_is_refused_up_front(node, tmp_path, monkeypatch, capsys, files, needle):
    from migration_guard.cli import remote_migrate as rm
    from migration_guard.cli.main import main

    etc = tmp_path / "etc-pve"
    for name, text in files.items():
        (etc / name).parent.mkdir(parents=True, exist_ok=True)
        (etc / name).write_text(text)
    monkeypatch.setattr(rm, "PVE_ETC", etc)
    monkeypatch.setenv("PATH", f"{node['bin']}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    monkeypatch.setenv("FAKE_PVE_STATE", str(node["state"]))
    monkeypatch.setenv("MIGRATION_GUARD_URL", "http://127.0.0.1:9")  # never asked: refused before
    monkeypatch.delenv("MIGRATION_GUARD_QM", raising=False)
    argv = ["remote-migrate", "102", "9102", ENDPOINT, *QM_ARGS, "--target-cluster", "intel"]
    code = main([*argv, "--target-node", "pvb2"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle.format(etc=etc) in err and err.endswith("nothing was changed\n") and err.count("\n") == 1
    assert calls(node) == [["config", "102"]]  # no qm set, no qm remote-migrate
    assert read_state(node)["vms"]["102"]["config"]["hookscript"] == HOOK


def test_other_vms_ha_and_replication_entries_do_not_refuse(tmp_path):
    from migration_guard.cli.remote_migrate import refusal

    (tmp_path / "ha").mkdir()
    (tmp_path / "ha" / "resources.cfg").write_text(HA_RESOURCES)
    (tmp_path / "replication.cfg").write_text(REPLICATION)
    assert refusal(1020, tmp_path) is not None and refusal(101, tmp_path) is not None
    assert refusal(103, tmp_path) is None and refusal(10, tmp_path) is None
    assert refusal(102, tmp_path / "no-such-etc") is None  # a node without HA or replication


# --- no secret of ours on a command line ---------------------------------------------------------


@pytest.mark.integration
def test_the_service_token_never_shows_in_ps(stack, node, tmp_path):  # noqa: F811
    token_file = tmp_path / "guard-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    args = ("102", "9102", ENDPOINT, *QM_ARGS, "--target-cluster", "intel", "--target-node", "pvb2")
    env = {"MIGRATION_GUARD_TOKEN": ""}
    proc = remote_migrate(node, stack["url"], *args, "--token-file", str(token_file), **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = read_state(node)
    assert "remote-migrate" in state["caller_cmdline"] and TOKEN not in state["caller_cmdline"]
    assert all(TOKEN not in arg for call in state["calls"] for arg in call)
    refused = remote_migrate(node, stack["url"], *args, "--token", TOKEN, **env)
    assert refused.returncode == 2
    assert "--token would put the service token on the command line" in refused.stderr
    assert "MIGRATION_GUARD_TOKEN" in refused.stderr and "--token-file FILE" in refused.stderr
    assert len(read_state(node)["calls"]) == len(state["calls"])  # nothing ran
