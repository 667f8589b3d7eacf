"""Helpers of the end-to-end test: processes with their output kept for failure messages, free
ports, waits, Slack request signing, and the hookscript run the way Proxmox runs it."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / "hookscript" / "migration-guard-hook"
CLI = Path(sys.executable).parent / "migration-guard"


def cli_argv(*args: str) -> list[str]:
    """``migration-guard ARGS`` as a command line: the installed console script, as deployed."""
    if CLI.is_file():
        return [str(CLI), *args]
    return [sys.executable, "-m", "migration_guard.cli.main", *args]


def free_port() -> int:
    """A port the kernel just handed out for 127.0.0.1 (bound to 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    proc: Proc | None = None,
    show: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check`` until it returns something truthy; AssertionError naming ``what`` otherwise,
    with the output of ``proc`` (which must stay alive meanwhile), or of ``show()`` when given."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        if proc is not None and proc.popen.poll() is not None:
            output = show() if show is not None else proc.output()
            raise AssertionError(
                f"{proc.name} exited ({proc.popen.returncode}) while waiting for {what}\n" + output
            )
        time.sleep(0.05)
    detail = "\n" + (show() if show is not None else proc.output() if proc is not None else "")
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r}){detail}")


class Proc:
    """A child process whose stdout/stderr go to files (no pipe can fill up and block it)."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], cwd: Path = REPO) -> None:
        self.name = name
        self._dir = tempfile.TemporaryDirectory(prefix=f"e2e-{name}-")
        self.stdout_path = Path(self._dir.name) / "stdout"
        self.stderr_path = Path(self._dir.name) / "stderr"
        if "MIGRATION_GUARD_STATE_DIR" not in env:  # its spool in a folder of its own, never /var/lib
            env = {**env, "MIGRATION_GUARD_STATE_DIR": str(Path(self._dir.name) / "state")}
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(
                list(argv), env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self, tail: int = 4000) -> str:
        return (
            f"--- {self.name} (pid {self.pid}) stdout ---\n{self.stdout()[-tail:]}"
            f"--- {self.name} stderr ---\n{self.stderr()[-tail:]}"
        )

    def first_line(self, timeout: float) -> str:
        """The first complete stdout line (READY banners)."""
        return wait_until(
            lambda: self.stdout().split("\n", 1)[0] if "\n" in self.stdout() else "",
            timeout,
            f"the first line of {self.name}",
            self,
        )

    def kill(self) -> None:
        """SIGKILL and reap (a zombie would still look alive to the notifier's takeover check)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._dir.cleanup()


def base_env(**values: str) -> dict[str, str]:
    """The current environment without any MIGRATION_GUARD_*/SLACK_* setting, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIGRATION_GUARD_", "SLACK_", "PVE_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(values)
    return env


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# --- Slack ---------------------------------------------------------------------------------------


def slack_signature(secret: str, timestamp: int, body: str) -> str:
    """What Slack sends as X-Slack-Signature: v0= HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    return "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()


def slash_command_body(text: str, response_url: str, command: str = "/canmove") -> str:
    return urlencode(
        {
            "token": "deprecated-verification-token",
            "team_id": "T0TEST",
            "team_domain": "test",
            "channel_id": "C0OPS",
            "channel_name": "ops",
            "user_id": "U0OPS",
            "user_name": "oncall",
            "command": command,
            "text": text,
            "api_app_id": "A0APP",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": f"{time.time_ns()}.1.abc",
        }
    )


def post_signed(url: str, secret: str, body: str) -> httpx.Response:
    ts = int(time.time())
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": slack_signature(secret, ts, body),
    }
    return httpx.post(url, content=body.encode(), headers=headers, timeout=10)


class SlackControl:
    """The Slack-shaped server's test controls over HTTP (it runs as a separate process)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def calls(self, method: str | None = None) -> list[dict[str, Any]]:
        params = {"method": method} if method else {}
        return httpx.get(f"{self.base}/_test/calls", params=params, timeout=5).json()

    def ok_calls(self, method: str) -> list[dict[str, Any]]:
        return [c for c in self.calls(method) if c.get("ok")]

    def fail(self, method: str, status: int = 500, times: int = 1) -> None:
        body = {"method": method, "status": status, "times": times}
        httpx.post(f"{self.base}/_test/fail", json=body, timeout=5).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.base}/_test/reset", json={}, timeout=5).raise_for_status()


def message_text(call: dict[str, Any]) -> str:
    """Everything a reader sees of a posted message: the text and every text in its blocks."""
    params = call.get("params") or {}
    blocks = params.get("blocks")
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return str(params.get("text") or "") + "\n" + json.dumps(blocks or [], ensure_ascii=False)


# --- the hookscript ------------------------------------------------------------------------------


def run_hook(
    vmid: int, source: str, target: str, url: str, token: str, config: Path, timeout: float = 15
) -> subprocess.CompletedProcess[str]:
    """The real hookscript file, run as Proxmox runs it on the target of an incoming live migration:
    ``<script> <vmid> pre-start`` with PVE_MIGRATED_FROM set to the source node."""
    env = base_env(
        PVE_MIGRATED_FROM=source,
        MIGRATION_GUARD_NODE=target,
        MIGRATION_GUARD_URL=url,
        MIGRATION_GUARD_TOKEN=token,
        MIGRATION_GUARD_CONFIG=str(config),
    )
    return subprocess.run(
        [str(HOOK), str(vmid), "pre-start"], env=env, capture_output=True, text=True, timeout=timeout
    )
