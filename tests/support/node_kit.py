"""The node kit's standard-library modules (hookscript/guard_*.py) as tests import them: top-level
modules from the hookscript folder, as the launcher imports them on a node."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

HOOKSCRIPT_DIR = Path(__file__).resolve().parents[2] / "hookscript"
LAUNCHER = HOOKSCRIPT_DIR / "migration-guard-hook"


ROOT = Path(__file__).resolve().parents[2]
FAKES = ROOT / "tests" / "fakes"
OURS = "local:snippets/migration-guard-hook"


class Node:
    """A temporary Proxmox node: state file for the fake CLIs, snippets folder, config dir."""

    def __init__(self, tmp: Path, root: Path | None = None) -> None:
        self.tmp = tmp
        self.root = root or tmp  # the node's "/" (its /etc/pve may be shared with other nodes)
        self.storage_root = tmp / "vz"
        self.snippets = self.storage_root / "snippets"
        self.snippets.mkdir(parents=True)
        self.config_dir = tmp / "etc-migration-guard"
        self.state_file = tmp / "pve-state.json"
        self.token = tmp / "token"
        self.token.write_text("tok-123\n")
        self.token.chmod(0o600)
        old = self.snippets / "old-hook.sh"
        self.record = tmp / "old-hook.log"
        old.write_text(f'#!/bin/sh\necho "$1 $2" >> {self.record}\nexit 0\n')
        old.chmod(0o755)
        self.save(
            {
                "node": "pve1",
                "storages": {
                    "local": {
                        "type": "dir",
                        "status": "active",
                        "content": ["iso", "vztmpl", "snippets"],
                        "path": str(self.storage_root),
                    },
                    "local-lvm": {
                        "type": "lvmthin",
                        "status": "active",
                        "content": ["images", "rootdir"],
                        "path": "/dev/pve",
                    },
                },
                "vms": {
                    "101": {
                        "name": "web01",
                        "status": "running",
                        "config": {"cpu": "host", "hookscript": "local:snippets/old-hook.sh"},
                    },
                    "102": {"name": "db01", "status": "stopped", "config": {"cpu": "x86-64-v2-AES"}},
                },
                "calls": [],
            }
        )

    def load(self) -> dict:
        return json.loads(self.state_file.read_text())

    def save(self, state: dict) -> None:
        self.state_file.write_text(json.dumps(state))

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PATH": f"{FAKES}:{env.get('PATH', '/usr/bin:/bin')}",
                "FAKE_PVE_STATE": str(self.state_file),
                "MIGRATION_GUARD_INSTALLER_SKIP_ROOT_CHECK": "1",
            }
        )
        env.update(extra)
        return env

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        common = ["--snippets-dir", str(self.snippets), "--config-dir", str(self.config_dir)]
        common += ["--root", str(self.root)]  # units, /etc/pve: below the test's folder, never the machine's
        return subprocess.run(
            [sys.executable, "-I", "-S", str(LAUNCHER), *args, *common],
            env=self.env(**env),
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )

    def hookscripts(self) -> dict[str, str | None]:
        return {vmid: vm["config"].get("hookscript") for vmid, vm in self.load()["vms"].items()}

    def changes(self) -> list[list[str]]:
        return [c for c in self.load()["calls"] if c[:2] == ["qm", "set"]]

    def snapshot(self) -> dict[str, tuple[bytes, int]]:
        files = {}
        for base in (self.snippets, self.config_dir, self.root / "etc"):
            for p in sorted(base.rglob("*")) if base.exists() else ():
                if p.is_file():
                    files[str(p)] = (p.read_bytes(), p.stat().st_mtime_ns)
        return files


INSTALL = ("install", "--url", "http://127.0.0.1:8080", "--token-file")


def guard_modules(*names: str) -> list[ModuleType]:
    if str(HOOKSCRIPT_DIR) not in sys.path:
        sys.path.append(str(HOOKSCRIPT_DIR))
    return [importlib.import_module(name) for name in names]
