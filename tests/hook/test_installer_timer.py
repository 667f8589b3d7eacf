"""The node installer's attach timer and `attach` (new VMs guarded by themselves), and the cluster-wide
lock on the shared chain map, against fake `qm`/`pvesm`/`systemctl` and a temporary root."""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.node_kit import INSTALL, OURS, Node, guard_modules

pytestmark = pytest.mark.integration

guard_plan, guard_pve = guard_modules("guard_plan", "guard_pve")
UNITS = ("migration-guard-attach.service", "migration-guard-attach.timer")


def add_vm(node: Node, vmid: str, **config: str) -> None:
    state = node.load()
    state["vms"][vmid] = {"name": f"vm{vmid}", "status": "running", "config": dict(config)}
    node.save(state)


def run_timer_service(node: Node) -> subprocess.CompletedProcess[str]:
    """What systemd does when the timer fires: the service unit's ExecStart, as written."""
    unit = (node.root / "etc/systemd/system" / UNITS[0]).read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    return subprocess.run(argv, env=node.env(), capture_output=True, text=True, timeout=60)


def systemctl_calls(node: Node) -> list[list[str]]:
    return [c[1:] for c in node.load()["calls"] if c[0] == "systemctl"]


def test_attach_all_starts_a_timer_whose_run_attaches_new_vms(node):
    add_vm(node, "103", template="1")
    add_vm(node, "104", tags="prod;migration-guard-skip")
    proc = node.cli(*INSTALL, str(node.token), "--attach", "all")
    assert proc.returncode == 0, proc.stderr
    assert "VM 103 left alone: a template" in proc.stderr
    assert "VM 104 left alone: tagged migration-guard-skip" in proc.stderr
    units = node.root / "etc/systemd/system"
    assert "OnUnitActiveSec=5min" in (units / UNITS[1]).read_text()
    assert systemctl_calls(node) == [["daemon-reload"], ["enable", "--now", UNITS[1]]]
    assert node.load()["units"][UNITS[1]] == {"enabled": True, "active": True}
    hooks = node.hookscripts()
    assert hooks["101"] == hooks["102"] == OURS and hooks["103"] is None and hooks["104"] is None

    # the timer fires with nothing new: nothing changes
    calls = len(node.changes())
    first = run_timer_service(node)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("nothing to change") and len(node.changes()) == calls

    # a VM created later (with its own hookscript) is attached by the timer's next run, chained
    add_vm(node, "105", hookscript="local:snippets/old-hook.sh")
    run = run_timer_service(node)
    assert run.returncode == 0, run.stderr
    assert (
        "VM 105: set hookscript local:snippets/migration-guard-hook "
        "(runs its previous hookscript local:snippets/old-hook.sh first)" in run.stdout
    )
    assert node.hookscripts()["105"] == OURS and node.hookscripts()["103"] is None
    assert "105=" in (node.config_dir / "chain.conf").read_text()
    assert "VM 104 left alone: tagged migration-guard-skip" in run.stderr  # the journal says why

    # a second install run changes nothing, the timer included
    again = node.cli(*INSTALL, str(node.token), "--attach", "all")
    assert again.stdout.startswith("nothing to change"), again.stdout
    assert "timer:    installed" in node.cli("status").stdout


def test_mode_off_and_uninstall_stop_and_remove_the_timer(node):
    assert node.cli(*INSTALL, str(node.token), "--attach", "all").returncode == 0
    units = node.root / "etc/systemd/system"
    off = node.cli("install", "--mode", "off")
    assert off.returncode == 0, off.stderr
    assert f"stop the attach timer: systemctl disable --now {UNITS[1]}" in off.stdout
    assert not any((units / u).exists() for u in UNITS)
    assert node.load()["units"][UNITS[1]] == {"enabled": False, "active": False}
    add_vm(node, "106")
    attach = node.cli("attach")  # a run left over (or by hand) in mode off attaches nothing
    assert attach.returncode == 0 and "mode = off in hook.conf: attaching nothing" in attach.stderr
    assert node.hookscripts()["106"] is None

    assert node.cli("install", "--mode", "enforce", "--attach", "all").returncode == 0
    assert (units / UNITS[1]).exists() and node.hookscripts()["106"] == OURS
    gone = node.cli("uninstall")
    assert gone.returncode == 0, gone.stderr
    assert not any((units / u).exists() for u in UNITS)
    assert systemctl_calls(node)[-2:] == [["disable", "--now", UNITS[1]], ["daemon-reload"]]
    assert "timer:    not installed" in node.cli("status").stdout


def test_attach_before_install_says_what_to_do(node):
    proc = node.cli("attach")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "hook.conf is missing: run `migration-guard-hook install` first" in proc.stderr


# --- the cluster-wide lock on the shared chain map -------------------------------------------------


def test_a_chain_map_changed_by_another_node_since_it_was_read_keeps_its_entries(tmp_path):
    chain = tmp_path / "etc/pve/migration-guard/chain.conf"
    chain.parent.mkdir(parents=True)
    read_then = "201=/srv/a.sh local:snippets/a.sh\n"
    chain.write_text(read_then + "301=/srv/b.sh local:snippets/b.sh\n")  # another node's VM 301, since
    opts = guard_plan.InstallOptions(root=tmp_path, chain_file=chain)
    ours = guard_plan.render_chain(
        guard_plan.parse_chain(read_then)
        | {"101": guard_plan.ChainEntry("101", "/srv/c.sh", "local:snippets/c.sh")}
    )
    step = guard_plan.Step("update-chain", "", chain, ours.encode(), None, before=read_then.encode())
    guard_pve.update_chain(opts, step)
    assert sorted(guard_plan.parse_chain(chain.read_text())) == ["101", "201", "301"]
    assert not (tmp_path / "etc/pve/priv/lock" / guard_pve.CHAIN_LOCK).exists()  # released


def test_the_lock_taken_elsewhere_waits_then_gives_up_with_one_line(tmp_path):
    opts = guard_plan.InstallOptions(
        root=tmp_path, chain_file=tmp_path / "etc/pve/migration-guard/chain.conf"
    )
    held = tmp_path / "etc/pve/priv/lock" / guard_pve.CHAIN_LOCK
    held.mkdir(parents=True)
    start = time.monotonic()
    lock = guard_pve.cluster_lock(opts, timeout=0.3, poll=0.05)
    with (
        pytest.raises(guard_plan.InstallError, match="stayed taken for 0 s .another node is installing"),
        lock,
    ):
        pass
    assert 0.3 <= time.monotonic() - start < 2 and held.is_dir()  # never took, never removed it


def test_two_nodes_installing_at_once_lose_no_chain_entry(tmp_path):
    """Two nodes of one cluster (one /etc/pve) attach at the same moment, each recording its VM's
    previous hookscript in the shared chain map: both entries are there afterwards."""
    root = tmp_path / "cluster"
    (root / "etc/pve").mkdir(parents=True)
    (root / "etc/pve/.members").write_text("{}")
    shared = root / "etc/pve/migration-guard/chain.conf"
    nodes = [Node(tmp_path / "n1", root), Node(tmp_path / "n2", root)]
    state = nodes[1].load()
    state["node"] = "pve2"
    state["vms"] = {str(int(k) + 100): v for k, v in state["vms"].items()}  # VMs 201, 202
    nodes[1].save(state)
    held = root / "etc/pve/priv/lock" / guard_pve.CHAIN_LOCK
    held.mkdir(parents=True)  # both start while a third holds the lock: they meet at it
    results: list[subprocess.CompletedProcess[str]] = []

    def install(n: Node) -> None:
        results.append(n.cli(*INSTALL, str(n.token), "--attach", "all", "--chain-file", str(shared)))

    threads = [threading.Thread(target=install, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    time.sleep(1.5)
    held.rmdir()
    for t in threads:
        t.join(60)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    entries = guard_plan.parse_chain(shared.read_text())
    assert sorted(entries) == ["101", "201"]
    assert not held.exists()
    assert all(Path(n.config_dir / "chain.conf").resolve() == shared for n in nodes)
