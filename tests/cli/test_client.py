"""``migration-guard check`` / ``matrix`` as subprocesses against a real HTTP server (uvicorn in a
thread, the service over a fake cluster reader), and ``migration-guard serve`` start-up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from migration_guard.api.app import create_app
from migration_guard.errors import ProxmoxUnreachable
from tests.fakes.service import TOKEN, FakeReader, make_service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served():
    reader = FakeReader()
    service = make_service(reader)
    app = create_app(service, (TOKEN,))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", reader
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


def cli(
    *args: str, url: str | None = None, token: str = TOKEN, timeout: float = 30
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATION_GUARD_")}
    if url is not None:
        env["MIGRATION_GUARD_URL"] = url
    env["MIGRATION_GUARD_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "migration_guard.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def test_check_allow_exit_0(served):
    url, _ = served
    done = cli("check", "102", "pve2", url=url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ALLOW  VM 102 (db01)  pve1 -> pve2")


def test_check_deny_exit_1_with_reasons(served):
    url, _ = served
    done = cli("check", "101", "pve3", url=url)
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("DENY  VM 101 (web01)  pve1 -> pve3  cpu x86-64-v4")
    assert "[missing-flags]" in done.stdout and "suggestion:" in done.stdout


def test_check_json(served):
    url, _ = served
    done = cli("check", "101", "pve5", "--json", url=url)
    assert done.returncode == 1
    body = json.loads(done.stdout)
    assert body["verdict"] == "deny" and body["reasons"][0]["code"] == "target-offline"


def test_check_unknown_exit_3(served):
    url, reader = served
    reader.error = ProxmoxUnreachable("cannot reach Proxmox at pve1:8006: connection refused")
    try:
        done = cli("check", "201", "pve3", url=url)
    finally:
        reader.error = None
    assert done.returncode == 3
    assert done.stdout.startswith("UNKNOWN") and "[cluster-unreachable]" in done.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("check", "abc", "pve2"), "VMID must be a number"),
        (("check", "00101", "pve2"), "VMID 00101 is not a Proxmox VM id"),
        (("check", "+101", "pve2"), "VMID must be a number"),
        (("check", "42", "pve2"), "VMID 42 is not a Proxmox VM id"),
        (("check", "999", "pve2"), "no VM 999"),
        (("check", "101", "pve9"), "no node pve9"),
    ],
)
def test_check_bad_input_exit_2(served, args, needle):
    url, _ = served
    done = cli(*args, url=url)
    assert done.returncode == 2
    assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_wrong_token_exit_2_one_line(served):
    url, _ = served
    done = cli("check", "101", "pve2", url=url, token="nope")
    assert done.returncode == 2
    assert "refused the token" in done.stderr and "Traceback" not in done.stderr


def test_token_with_a_line_break_is_refused_without_echoing_it(served):
    """A token pasted with its neighbour line used to reach the HTTP library, whose complaint
    ("Illegal header value b'Bearer <token>...'") was printed: the secret in the terminal and logs."""
    url, _ = served
    secret = "s3cretTokenValue"
    done = cli("check", "101", "pve2", url=url, token=f"{secret}\n(signed in)")
    assert done.returncode == 2, done.stderr
    assert "copy the token again" in done.stderr and "Traceback" not in done.stderr
    assert secret not in done.stderr + done.stdout


def test_service_unreachable_exit_3():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = cli("check", "101", "pve2", url=f"http://127.0.0.1:{port}")
    assert done.returncode == 3
    assert f"the migration-guard service at http://127.0.0.1:{port} is unreachable" in done.stderr
    assert "Traceback" not in done.stderr


def test_matrix_table_and_json(served):
    url, _ = served
    done = cli("matrix", url=url)
    assert done.returncode == 1  # some moves are denied
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["VMID", "NAME", "ON", "CPU"]
    row = next(line for line in lines if line.startswith("101 "))
    assert "NO missing-flags" in row
    done = cli("matrix", "--json", url=url)
    body = json.loads(done.stdout)
    assert {r["vmid"] for r in body["vms"]} >= {101, 102}


def test_serve_missing_setting_one_line_exit_2():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATION_GUARD_")}
    done = subprocess.run(
        [sys.executable, "-m", "migration_guard.cli.main", "serve"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "migration-guard: MIGRATION_GUARD_PVE_HOST is not set: "
        "the Proxmox host to read, e.g. pve1.example.com:8006"
    )


def test_serve_demo_prints_url_token_and_examples_and_answers():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATION_GUARD_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "migration_guard.cli.main",
            "serve",
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--scenario",
            str(ROOT / "tests" / "fixtures" / "service" / "scenario.json"),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Stop with"):
                break
        text = "".join(lines)
        assert text.startswith("migration-guard demo: serving at http://127.0.0.1:"), (
            text + proc.stderr.read()
        )
        url = text.split("serving at ", 1)[1].split()[0]
        token = next(line.split(": ", 1)[1].strip() for line in lines if "API token:" in line)
        assert text.count("curl -s") == 3
        done = cli("check", "104", "pve3", url=url, token=token)  # tagged migration-guard-skip
        assert done.returncode == 0 and "[bypassed]" in done.stdout
        done = cli("check", "101", "pve5", url=url, token=token)  # pve5 is offline
        assert done.returncode == 1 and "[target-offline]" in done.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=10)
