"""The command line's own surface: ``--version``, the bot's own command, the licence it declares."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_version_prints_the_installed_version():
    proc = subprocess.run(
        [sys.executable, "-m", "migration_guard.cli.main", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"migration-guard {PROJECT['version']}"


def test_the_bot_has_its_own_command_with_one_line_errors():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MIGRATION_GUARD_"))}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from migration_guard_bot.cli import main; sys.exit(main())",
            "--notifier-only",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("migration-guard-bot: SLACK_BOT_TOKEN is not set")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["migration-guard-bot"] == "migration_guard_bot.cli:main"


def test_the_licence_is_the_agpl_the_package_declares():
    assert PROJECT["license"] == "AGPL-3.0-or-later"
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("GNU AFFERO GENERAL PUBLIC LICENSE")
    assert "Version 3, 19 November 2007" in text
