"""``migration-guard bot --console`` driven as a subprocess against a stand-in service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bot.support import TOKEN, FakeService

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """`migration-guard ARGS...` as a subprocess in the repository, with ``env`` as its whole
    environment and ``stdin`` (when given) as its input."""
    return subprocess.run(
        [sys.executable, "-m", "migration_guard.cli.main", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def console(service_url: str, lines: list[str], **env: str) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, MIGRATION_GUARD_URL=service_url, MIGRATION_GUARD_TOKEN=TOKEN, **env)
    return run_cli("bot", "--console", env=full_env, stdin="\n".join(lines) + "\n")


def test_console_answers_like_slack():
    with FakeService() as svc:
        out = console(
            svc.url,
            [
                "can vm 101 move to node3?",
                "where can vm 101 go?",
                "which cpu type should we use?",
                "recent blocks",
                "can vm 102 go to node2",
                "can vm 101 go to nod3",
                "what is the meaning of life",
                "quit",
                "never read",
            ],
        )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "⛔ No: VM 101 web01 cannot move to node3" in text
    assert "• node3 lacks avx512f, avx512bw needed by Skylake-Server (missing-flags)" in text
    assert "use x86-64-v3 for VM 101" in text
    assert "VM 101 web01 on node1: can move to 1 of 2 other nodes" in text
    assert "💡 Recommended CPU type for node1, node2, node3: x86-64-v3" in text
    assert "Latest decisions for the cluster" in text
    assert "✅ Yes: VM 102 <!channel> can move to node2" in text  # the terminal shows the real name
    assert "There is no node nod3. Did you mean node3? Known nodes: node1, node2, node3." in text
    assert 'I did not understand "meaning".' in text
    assert out.stderr == ""


def test_console_says_so_in_one_line_when_the_service_is_down():
    out = console("http://127.0.0.1:9", ["can vm 101 move to node3"])
    assert out.returncode == 0
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    assert lines[1].startswith("⚠️ Cannot answer right now: the migration-guard service at http://127.0.0.1:9")
    assert len(lines) == 2


def test_bot_without_tokens_is_a_one_line_config_error():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    out = run_cli("bot", env=env)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "migration-guard: SLACK_BOT_TOKEN is not set (the xoxb-... token of the Slack app)"
    ]


def test_bad_command_setting_is_refused():
    out = run_cli(
        "bot", "--console", env=dict(os.environ, MIGRATION_GUARD_SLACK_COMMAND="/Can Move"), stdin=""
    )
    assert out.returncode == 2
    assert "MIGRATION_GUARD_SLACK_COMMAND='/Can Move' is not a Slack slash command" in out.stderr


def test_socket_mode_with_a_refused_app_token_is_a_one_line_error():
    from tests.fakes.slack_api_server import SlackApiServer

    with SlackApiServer() as slack:
        env = dict(
            os.environ,
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_APP_TOKEN="xoxb-not-an-app-token",
            MIGRATION_GUARD_SLACK_API_URL=slack.url,
        )
        env.pop("MIGRATION_GUARD_REDIS_URL", None)
        out = run_cli("bot", env=env)
        assert [c["method"] for c in slack.calls()] == ["auth.test", "apps.connections.open"]
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last == (
        "migration-guard: Slack refused SLACK_APP_TOKEN for Socket Mode (not_allowed_token_type); "
        "it must be an xapp-... app-level token with the connections:write scope"
    )
    assert "Traceback" not in out.stderr and "xoxb-test" not in out.stderr


def test_slack_unreachable_is_exit_3():
    env = dict(
        os.environ,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_APP_TOKEN="xapp-test",
        MIGRATION_GUARD_SLACK_API_URL="http://127.0.0.1:9/api/",
    )
    out = run_cli("bot", env=env)
    assert out.returncode == 3, out.stderr
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("migration-guard: cannot reach the Slack API at http://127.0.0.1:9/api/")
    )
