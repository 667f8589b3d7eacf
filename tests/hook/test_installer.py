"""The node installer `migration-guard-hook install|uninstall|status` (hookscript/guard_install.py,
standard library only) against fake `qm`/`pvesm` on PATH (tests/fakes), run as a node runs it."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.node_kit import HOOKSCRIPT_DIR, INSTALL, LAUNCHER, OURS, guard_modules

guard_install, guard_plan, guard_pve = guard_modules("guard_install", "guard_plan", "guard_pve")
InstallError, InstallOptions = guard_plan.InstallError, guard_plan.InstallOptions

pytestmark = pytest.mark.integration
HOOK_SOURCE = LAUNCHER


def test_install_attach_all_copies_configures_chains_and_attaches(node):
    proc = node.cli(*INSTALL, str(node.token), "--attach", "all", "--fail", "closed")
    assert proc.returncode == 0, proc.stderr
    script = node.snippets / "migration-guard-hook"
    assert script.read_bytes() == HOOK_SOURCE.read_bytes()
    assert script.stat().st_mode & 0o777 == 0o755
    for module in HOOKSCRIPT_DIR.glob("guard_*.py"):  # beside the launcher, which imports them
        assert (node.snippets / module.name).read_bytes() == module.read_bytes()
    assert list((node.snippets / "__pycache__").glob("guard_hook.*.pyc"))  # compiled once, at install
    conf = (node.config_dir / "hook.conf").read_text()
    assert "url = http://127.0.0.1:8080\n" in conf
    assert f"token_file = {node.token}\n" in conf and "fail = closed\n" in conf
    assert "tok-123" not in conf + proc.stdout + proc.stderr
    chain = (node.config_dir / "chain.conf").read_text()
    assert f"101={node.snippets / 'old-hook.sh'} local:snippets/old-hook.sh\n" in chain
    assert "102=" not in chain
    assert node.hookscripts() == {"101": OURS, "102": OURS}
    assert (
        "VM 101: set hookscript local:snippets/migration-guard-hook (runs its previous hookscript "
        "local:snippets/old-hook.sh first)" in proc.stdout
    )
    assert "must exist on EVERY node" in proc.stderr
    # what Proxmox does next: run the installed script; the chained hook runs first
    hook_env = {"MIGRATION_GUARD_CONFIG": str(node.config_dir / "hook.conf"), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([str(script), "101", "post-start"], capture_output=True, text=True, env=hook_env)
    assert run.returncode == 0
    assert node.record.read_text() == "101 post-start\n"


def test_second_install_changes_nothing(node):
    assert node.cli(*INSTALL, str(node.token), "--attach", "all").returncode == 0
    before, calls = node.snapshot(), len(node.changes())
    proc = node.cli(*INSTALL, str(node.token), "--attach", "all")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("nothing to change")
    assert node.snapshot() == before
    assert len(node.changes()) == calls
    # without options the existing config is kept as it is
    proc = node.cli("install")
    assert proc.returncode == 0 and proc.stdout.startswith("nothing to change")


def test_uninstall_restores_previous_hookscripts(node):
    assert node.cli(*INSTALL, str(node.token), "--attach", "all").returncode == 0
    proc = node.cli("uninstall")
    assert proc.returncode == 0, proc.stderr
    assert node.hookscripts() == {"101": "local:snippets/old-hook.sh", "102": None}
    assert "VM 101: restore previous hookscript local:snippets/old-hook.sh" in proc.stdout
    assert "VM 102: remove hookscript local:snippets/migration-guard-hook" in proc.stdout
    assert "101=" not in (node.config_dir / "chain.conf").read_text()
    calls = len(node.changes())
    again = node.cli("uninstall")
    assert again.returncode == 0 and again.stdout.startswith("nothing to change")
    assert len(node.changes()) == calls


def test_dry_run_prints_the_plan_and_changes_nothing(node):
    before = node.snapshot()
    proc = node.cli(*INSTALL, str(node.token), "--attach", "101", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "plan (dry run, nothing changed):"
    assert f"  - copy the hookscript to {node.snippets / 'migration-guard-hook'} (mode 0755)" in proc.stdout
    assert "  - VM 101: set hookscript" in proc.stdout and "VM 102" not in proc.stdout
    assert node.snapshot() == before
    assert node.changes() == []
    assert node.hookscripts()["101"] == "local:snippets/old-hook.sh"
    # uninstall --dry-run after a real install: nothing restored
    assert node.cli(*INSTALL, str(node.token), "--attach", "all").returncode == 0
    proc = node.cli("uninstall", "--dry-run")
    assert "VM 101: restore previous hookscript" in proc.stdout
    assert node.hookscripts() == {"101": OURS, "102": OURS}


def test_storage_without_snippets_is_refused(node):
    proc = node.cli(*INSTALL, str(node.token), "--storage", "local-lvm")
    assert proc.returncode == 2
    assert "storage 'local-lvm' does not allow snippets" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (node.snippets / "migration-guard-hook").exists()


def test_first_install_needs_a_url(node):
    proc = node.cli("install")
    assert proc.returncode == 2
    assert "no service URL: give --url" in proc.stderr


def test_attach_vm_of_another_node_is_refused(node):
    proc = node.cli(*INSTALL, str(node.token), "--attach", "555")
    assert proc.returncode == 2
    assert "VM 555 is not on this node" in proc.stderr
    assert node.changes() == []


def test_status(node):
    assert node.cli(*INSTALL, str(node.token), "--attach", "all").returncode == 0
    proc = node.cli("status")
    assert proc.returncode == 0, proc.stderr
    assert "(current)" in proc.stdout and "attached: 101, 102" in proc.stdout
    assert "chained:  VM 101 runs" in proc.stdout


def test_chain_file_elsewhere_gets_a_link_the_hook_follows(node, tmp_path):
    shared_chain = tmp_path / "pve" / "migration-guard" / "chain.conf"
    proc = node.cli(*INSTALL, str(node.token), "--chain-file", str(shared_chain))  # first pass: no VM
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(node.config_dir / "chain.conf") == str(shared_chain)  # ready for migrating VMs
    proc = node.cli(*INSTALL, str(node.token), "--attach", "all")
    assert proc.returncode == 0, proc.stderr
    link = node.config_dir / "chain.conf"
    assert link.is_symlink() and Path(os.readlink(link)) == shared_chain
    assert "101=" in shared_chain.read_text()
    again = node.cli(*INSTALL, str(node.token), "--attach", "all")  # the link keeps the place
    assert again.stdout.startswith("nothing to change"), again.stdout
    assert f"chain:    {shared_chain}" in node.cli("status").stdout
    run = subprocess.run(
        [str(node.snippets / "migration-guard-hook"), "101", "pre-stop"],
        env={"MIGRATION_GUARD_CONFIG": str(node.config_dir / "hook.conf")},
    )
    assert run.returncode == 0 and node.record.read_text() == "101 pre-stop\n"


def test_world_readable_token_file_is_made_0600(node):
    node.token.chmod(0o644)
    proc = node.cli(*INSTALL, str(node.token))
    assert proc.returncode == 0
    assert f"  - {node.token}: mode 0644 -> 0600, owner " in proc.stdout
    assert node.token.stat().st_mode & 0o777 == 0o600


def test_needs_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(InstallError, match="run this as root on a Proxmox VE node"):
        guard_install.check_root()


@pytest.mark.parametrize(
    ("opts", "needle"),
    [
        (InstallOptions(attach=("all", "101")), "either `all` or VMIDs"),
        (InstallOptions(attach=("abc",)), "give `all` or VMIDs"),
        (InstallOptions(timeout="0"), "seconds between 0 and 120"),
        (InstallOptions(url="ftp://x"), "expected http(s)://"),
    ],
)
def test_bad_options(opts, needle):
    with pytest.raises(InstallError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        guard_plan.check_options(opts)


def test_parsers_read_real_formats():
    qm_list = (
        "      VMID NAME                 STATUS     MEM(MB)    BOOTDISK(GB) PID       \n"
        "       100 web01                running    2048              32.00 1234      \n"
        "      1001 db                   stopped    4096               0.00 0         \n"
    )
    assert guard_pve.parse_qm_list(qm_list) == ["100", "1001"]
    status = (
        "Name             Type     Status           Total            Used       Available        %\n"
        "local             dir     active        98497780        12345678        81234567   12.53%\n"
        "nfs1              nfs   inactive               0               0               0    0.00%\n"
    )
    assert guard_pve.parse_pvesm_status(status) == {"local": "active", "nfs1": "inactive"}


def test_chain_map_defaults_to_the_cluster_file_system_on_a_cluster_node(tmp_path):
    config_dir = tmp_path / "etc" / "migration-guard"
    members = tmp_path / "etc" / "pve" / ".members"
    members.parent.mkdir(parents=True)
    opts = InstallOptions(root=tmp_path)
    assert guard_pve.resolve_chain_file(opts).chain_path == config_dir / "chain.conf"  # no cluster
    members.write_text("{}")
    shared = tmp_path / "etc" / "pve" / "migration-guard" / "chain.conf"
    assert guard_pve.resolve_chain_file(opts).chain_path == shared
    config_dir.mkdir()
    (config_dir / "chain.conf").write_text("")  # an earlier local chain map stays where it is
    assert guard_pve.resolve_chain_file(opts).chain_path == config_dir / "chain.conf"


# --- the chain map is never lost; permissions of what holds the token -----------------------------


def test_chain_file_elsewhere_merges_an_existing_local_chain_map(node, tmp_path):
    """A first install kept chain.conf in CONFIG_DIR; a later --chain-file must carry its entries."""
    assert node.cli(*INSTALL, str(node.token), "--attach", "101").returncode == 0
    local = node.config_dir / "chain.conf"
    assert not local.is_symlink() and "101=" in local.read_text()
    shared_chain = tmp_path / "pve" / "migration-guard" / "chain.conf"
    shared_chain.parent.mkdir(parents=True)
    shared_chain.write_text("# other nodes' VMs\n205=/srv/backup.sh local:snippets/backup.sh\n")
    proc = node.cli(*INSTALL, str(node.token), "--chain-file", str(shared_chain))
    assert proc.returncode == 0, proc.stderr
    entries = guard_plan.parse_chain(shared_chain.read_text())
    assert sorted(entries) == ["101", "205"]
    assert entries["101"].volid == "local:snippets/old-hook.sh"
    assert local.is_symlink() and os.readlink(local) == str(shared_chain)
    assert f"(its entries for VM 101 merged into {shared_chain})" in proc.stdout
    # the hook still runs VM 101's previous hookscript first
    run = subprocess.run(
        [str(node.snippets / "migration-guard-hook"), "101", "pre-stop"],
        env={"MIGRATION_GUARD_CONFIG": str(node.config_dir / "hook.conf")},
    )
    assert run.returncode == 0 and node.record.read_text() == "101 pre-stop\n"


def test_chain_file_with_a_conflicting_entry_is_refused_with_one_line(node, tmp_path):
    assert node.cli(*INSTALL, str(node.token), "--attach", "101").returncode == 0
    local = node.config_dir / "chain.conf"
    before = local.read_text()
    shared_chain = tmp_path / "shared-chain.conf"
    shared_chain.write_text("101=/srv/other.sh local:snippets/other.sh\n")
    proc = node.cli(*INSTALL, str(node.token), "--chain-file", str(shared_chain))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "VM 101 has two previous hookscripts" in proc.stderr and "nothing was changed" in proc.stderr
    assert local.read_text() == before and not local.is_symlink()
    assert shared_chain.read_text() == "101=/srv/other.sh local:snippets/other.sh\n"


def test_relinking_to_another_chain_file_keeps_the_old_ones_entries(node, tmp_path):
    first = tmp_path / "first" / "chain.conf"
    assert node.cli(*INSTALL, str(node.token), "--chain-file", str(first), "--attach", "101").returncode == 0
    assert "101=" in first.read_text()
    second = tmp_path / "second" / "chain.conf"
    proc = node.cli(*INSTALL, str(node.token), "--chain-file", str(second))
    assert proc.returncode == 0, proc.stderr
    assert "101=" in second.read_text() and os.readlink(node.config_dir / "chain.conf") == str(second)


@pytest.mark.parametrize("option", ["--chain-file", "--token-file", "--ca-file"])
def test_relative_paths_are_refused(node, option):
    proc = node.cli(*INSTALL, str(node.token), option, "chain.conf" if option == "--chain-file" else "tok")
    assert proc.returncode == 2
    assert f"{option} " in proc.stderr and "an absolute path" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not (node.config_dir / "chain.conf").is_symlink() and node.changes() == []


def test_dry_run_shows_the_exact_change_as_a_diff(node, tmp_path):
    conf = node.config_dir / "hook.conf"
    assert node.cli(*INSTALL, str(node.token), "--attach", "101").returncode == 0
    conf.write_text(conf.read_text() + "token = inline-secret-value\n")
    conf.chmod(0o600)
    before = node.snapshot()
    shared_chain = tmp_path / "shared-chain.conf"
    proc = node.cli("install", "--fail", "closed", "--chain-file", str(shared_chain), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"--- {conf}\n+++ {conf} (new)\n" in out
    assert "+fail = closed\n" in out
    assert "inline-secret-value" not in out + proc.stderr and " token = ***" in out
    assert f"--- {shared_chain} (missing)\n+++ {shared_chain} (new)\n" in out
    assert f"+101={node.snippets / 'old-hook.sh'} local:snippets/old-hook.sh\n" in out
    assert node.snapshot() == before and not shared_chain.exists()


def test_reinstall_fixes_loose_permissions_of_the_token_and_config(node):
    assert node.cli(*INSTALL, str(node.token)).returncode == 0
    conf = node.config_dir / "hook.conf"
    assert conf.stat().st_mode & 0o777 == 0o600
    node.token.chmod(0o644)
    conf.chmod(0o644)
    proc = node.cli("install")
    assert proc.returncode == 0, proc.stderr
    assert node.token.stat().st_mode & 0o777 == 0o600 and conf.stat().st_mode & 0o777 == 0o600
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert f"  - {node.token}: mode 0644 -> 0600, owner {user} (it holds the service token)" in proc.stdout
    assert f"  - {conf}: mode 0644 -> 0600, owner {user}" in proc.stdout
    again = node.cli("install")
    assert again.stdout.startswith("nothing to change"), again.stdout


def test_a_token_file_on_the_cluster_file_system_is_not_chmodded_but_named(node, tmp_path):
    """pmxcfs (/etc/pve) has fixed modes and no chmod: a fix there would stop every install."""
    pve_fs = tmp_path / "etc" / "pve"
    pve_fs.mkdir(parents=True)
    token = pve_fs / "guard.token"
    token.write_text("tok-123\n")
    token.chmod(0o640)
    env = node.env()
    opts = InstallOptions(
        root=tmp_path,
        snippets_dir=node.snippets,
        config_dir=node.config_dir,
        url="http://127.0.0.1:8080",
        token_file=str(token),
    )
    report = guard_install.install(opts, guard_pve.Pve(env=env), skip_root_check=True)
    assert [s for s in report.steps if s.kind == "fix-mode"] == []
    assert token.stat().st_mode & 0o777 == 0o640
    assert any(n.startswith(f"warning: {token} is on the cluster file system") for n in report.notes)


def test_the_package_cli_runs_the_same_installer(node):
    """`migration-guard hook ...` (the Python package) runs the packaged launcher's installer."""
    common = [
        "--snippets-dir",
        str(node.snippets),
        "--config-dir",
        str(node.config_dir),
        "--root",
        str(node.root),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "migration_guard.cli.main", "hook", *INSTALL, str(node.token), *common],
        env=node.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (node.snippets / "migration-guard-hook").read_bytes() == LAUNCHER.read_bytes()
    status = subprocess.run(
        [sys.executable, "-m", "migration_guard.cli.main", "hook", "status", *common],
        env=node.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "(current)" in status.stdout and "timer:    not installed" in status.stdout
    wrong = subprocess.run(
        [sys.executable, "-m", "migration_guard.cli.main", "hook", "frobnicate"],
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 2 and "install, attach, status, uninstall" in wrong.stderr
