"""The README's node rollout, whole: the node kit fetched from a running service over real HTTP and
piped into `sh -s -- --all-nodes` on one node of a three-node cluster (fake `qm`/`pvesm`/`pvecm`/
`systemctl`/`ssh`, each node its own temporary root, one shared /etc/pve). It installs everywhere,
attaches, re-runs without a change, the attach timer guards a VM created later, the installed hook
asks the real service, and uninstall gives every VM its previous hookscript back."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.fakes.pve import pve_server
from tests.support.node_kit import FAKES, OURS, Node
from tests.support.service_stack import serving, settings_for

pytestmark = pytest.mark.integration
api = pytest.importorskip("migration_guard.api.app")
guard = pytest.importorskip("migration_guard.service.guard")

TOKEN = "kit-test-token-5f2a9c"
NODES = ("pve1", "pve2", "pve3")
TIMER = "migration-guard-attach"


@pytest.fixture(scope="module")
def service_url():
    with pve_server("demo") as pve:
        settings = settings_for(pve, api_tokens=TOKEN, pve_cluster_name="demo", redis_url="memory://")
        app = api.create_app(guard.build_service(settings), settings.bearer_tokens())
        with serving(app) as url:
            yield url


class Cluster:
    """Three fake nodes; pve1 is where the operator pastes the kit."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        pvefs = tmp / "pvefs"  # the cluster file system every node mounts at /etc/pve
        pvefs.mkdir()
        members = {n: {"id": i + 1, "online": 1, "ip": f"192.0.2.{i + 11}"} for i, n in enumerate(NODES)}
        (pvefs / ".members").write_text(json.dumps({"nodename": "pve1", "version": 7, "nodelist": members}))
        self.nodes: dict[str, Node] = {}
        for i, name in enumerate(NODES):
            node = Node(tmp / name)
            (node.root / "etc").mkdir(exist_ok=True)
            (node.root / "etc/pve").symlink_to(pvefs)
            state = node.load()
            state.update(node=name, cluster_nodes=list(NODES))
            state["vms"] = {str(int(k) + 100 * i): v for k, v in state["vms"].items()}  # unique VMIDs
            node.save(state)
            (tmp / name / "env.json").write_text(json.dumps(self.node_env(node)))
            self.nodes[name] = node

    def node_env(self, node: Node) -> dict[str, str]:
        return {
            "FAKE_PVE_STATE": str(node.state_file),
            "MIGRATION_GUARD_INSTALLER_ROOT": str(node.root),
            "MIGRATION_GUARD_INSTALLER_SKIP_ROOT_CHECK": "1",
        }

    def paste(self, url: str, *options: str) -> subprocess.CompletedProcess[str]:
        """The README's one paste, on pve1, as root's shell runs it."""
        line = f'curl -fsS -H "Authorization: Bearer $T" {url}/v1/node-kit | sh -s -- {" ".join(options)}'
        env = {
            "PATH": f"{FAKES}:/usr/bin:/bin",
            "T": TOKEN,
            "FAKE_CLUSTER": str(self.dir),
            "TMPDIR": str(self.dir),
            **self.node_env(self.nodes["pve1"]),
        }
        return subprocess.run(["sh", "-c", line], env=env, capture_output=True, text=True, timeout=300)

    def sets(self) -> int:
        return sum(len(n.changes()) for n in self.nodes.values())


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return Cluster(tmp_path)


def test_one_paste_installs_every_node_then_the_timer_guards_new_vms(cluster, service_url):
    proc = cluster.paste(service_url, "--all-nodes", "--mode", "enforce")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "phase 1 of 2: the hook's files and config on 3 node(s): pve1, pve2, pve3" in out
    assert all(f"{n}: files ok" in out and f"{n}: attach ok (2 VM(s) attached)" in out for n in NODES)
    assert out.index("pve3: files ok") < out.index("phase 2 of 2")  # every node had the files first
    assert TOKEN not in out + proc.stderr
    ssh_argv = (cluster.dir / "ssh-argv.log").read_text()
    assert TOKEN not in ssh_argv  # never on a command line (ps)
    assert '"HostKeyAlias=pve2", "root@192.0.2.12"' in ssh_argv  # as Proxmox reaches its nodes
    for i, (name, node) in enumerate(cluster.nodes.items()):
        token = node.root / "etc/migration-guard/token"
        assert token.read_text().strip() == TOKEN and token.stat().st_mode & 0o777 == 0o600
        conf = (node.root / "etc/migration-guard/hook.conf").read_text()
        assert f"url = {service_url}\n" in conf and f"token_file = {token}\n" in conf
        assert (node.snippets / "guard_hook.py").exists() and (node.snippets / "guard_install.py").exists()
        assert node.hookscripts() == {str(101 + 100 * i): OURS, str(102 + 100 * i): OURS}, name
        assert node.load()["units"][f"{TIMER}.timer"] == {"enabled": True, "active": True}
    chain = (cluster.dir / "pvefs/migration-guard/chain.conf").read_text()
    assert all(f"{vmid}=" in chain for vmid in ("101", "201", "301"))  # every node's, one shared map
    assert not list(cluster.dir.glob("migration-guard-kit.*"))  # the unpacked kit (and token) is gone

    # the installed hook asks the real service: VM 101 (cpu host, AMD) cannot go to an Intel node
    pve1 = cluster.nodes["pve1"]
    hook_env = {
        "PATH": "/usr/bin:/bin",
        "MIGRATION_GUARD_CONFIG": str(pve1.root / "etc/migration-guard/hook.conf"),
        "MIGRATION_GUARD_NODE": "pve-xeon-bdw",
        "PVE_MIGRATED_FROM": "pve-epyc1",
    }
    hook = subprocess.run(
        [str(pve1.snippets / "migration-guard-hook"), "101", "pre-start"],
        env=hook_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert hook.returncode == 1, hook.stderr
    assert "vendor" in hook.stderr.lower()

    # the same paste again changes nothing anywhere
    sets = cluster.sets()
    again = cluster.paste(service_url, "--all-nodes", "--mode", "enforce")
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(f"{n}: attach ok (no change)" in again.stdout for n in NODES)
    assert cluster.sets() == sets

    # a VM created later on pve2 is attached by pve2's timer, as systemd runs it
    pve2 = cluster.nodes["pve2"]
    state = pve2.load()
    state["vms"]["250"] = {"name": "new01", "status": "running", "config": {"cpu": "x86-64-v2-AES"}}
    pve2.save(state)
    unit = (pve2.root / "etc/systemd/system" / f"{TIMER}.service").read_text()
    exec_start = shlex.split(next(x for x in unit.splitlines() if x.startswith("ExecStart="))[10:])
    env = {**os.environ, "PATH": f"{FAKES}:/usr/bin:/bin", **cluster.node_env(pve2)}
    run = subprocess.run(exec_start, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "VM 250: set hookscript local:snippets/migration-guard-hook" in run.stdout
    assert pve2.hookscripts()["250"] == OURS

    # uninstall, node by node, with the installed launcher: previous hookscripts back, timers gone
    for i, node in enumerate(cluster.nodes.values()):
        env = {**os.environ, "PATH": f"{FAKES}:/usr/bin:/bin", **cluster.node_env(node)}
        launcher = str(node.snippets / "migration-guard-hook")
        gone = subprocess.run(
            [launcher, "uninstall", "--root", str(node.root)], env=env, capture_output=True, text=True
        )
        assert gone.returncode == 0, gone.stderr
        assert node.hookscripts()[str(101 + 100 * i)] == "local:snippets/old-hook.sh"
        assert not (node.root / "etc/systemd/system" / f"{TIMER}.timer").exists()
    assert guard_entries(cluster) == []


def guard_entries(cluster: Cluster) -> list[str]:
    text = (cluster.dir / "pvefs/migration-guard/chain.conf").read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_a_node_that_fails_is_named_and_nothing_is_attached_anywhere(cluster, service_url):
    (cluster.dir / "pve3" / "unreachable").write_text("")
    proc = cluster.paste(service_url, "--all-nodes")
    assert proc.returncode == 1
    assert "pve3: files FAILED: ssh: connect to host pve3 port 22: No route to host" in proc.stdout
    assert "pve1: files ok" in proc.stdout and "pve2: files ok" in proc.stdout
    assert "nothing was attached on any node" in proc.stdout and "phase 2" not in proc.stdout
    assert cluster.sets() == 0
    assert all(None in n.hookscripts().values() for n in cluster.nodes.values())


def test_the_kit_needs_the_token_and_says_what_it_is(service_url):
    request = urllib.request.Request(f"{service_url}/v1/node-kit")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    request.add_header("Authorization", f"Bearer {TOKEN}")
    request.add_header("Accept", "application/json")
    with urllib.request.urlopen(request, timeout=10) as answer:
        manifest = json.loads(answer.read())
    names = [f["name"] for f in manifest["files"]]
    assert names[0] == "migration-guard-hook" and "guard_hook.py" in names and "guard_rollout.py" in names
    launcher = Path(__file__).resolve().parents[2] / "hookscript" / "migration-guard-hook"
    assert manifest["files"][0]["sha256"] == hashlib.sha256(launcher.read_bytes()).hexdigest()
