"""The node hookscript, run as Proxmox runs it: a subprocess `<script> <vmid> <phase>`.

The service side here is a stand-in HTTP server speaking the contract of docs/architecture.md
(POST /v1/decisions, `Accept: text/plain` answered with key=value lines); the real service is
exercised in tests/hook/test_hookscript_service.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

HOOK = Path(__file__).resolve().parents[2] / "hookscript" / "migration-guard-hook"
TOKEN = "s3cr3t-token-value"

#: the last line of every complete text/plain answer of the service (shared/migration_guard/api/app.py)
END = "end=1\n"

VENDOR_LINE = (
    "blocked migration of VM 101 (web01) from pve1 to pve3: VM 101 uses cpu host on an AMD node; "
    "pve3 is Intel"
)


class StandIn:
    """A tiny HTTP server that answers like the service; records every request."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status = 200
        self.content_type = "text/plain; charset=utf-8"
        self.body = f"verdict=allow\ncode=ok\nexit=0\ndecision=01T\nline=allowed migration of VM 101\n{END}"
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                owner.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "json": json.loads(raw)}
                )
                data = owner.body.encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", owner.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(
        self,
        status: int = 200,
        body: str = "",
        content_type: str = "text/plain; charset=utf-8",
        end: bool = True,
    ) -> None:
        """Answer ``body``, with the service's final end line unless ``end`` is False."""
        self.status, self.body, self.content_type = status, body + (END if end else ""), content_type

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def standin():
    s = StandIn()
    yield s
    s.close()


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    d = tmp_path / "etc"
    d.mkdir()
    token = d / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    return d


def write_conf(confdir: Path, **values: object) -> Path:
    values.setdefault("token_file", str(confdir / "token"))
    values.setdefault("node", "pve3")
    path = confdir / "hook.conf"
    path.write_text("# test config\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
    return path


def run_hook(confdir: Path, *args: str, migrated_from: str | None = "pve1", **env: str):
    full = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "MIGRATION_GUARD_CONFIG": str(confdir / "hook.conf"),
    }
    if migrated_from is not None:
        full["PVE_MIGRATED_FROM"] = migrated_from
    full.update(env)
    start = time.monotonic()
    proc = subprocess.run(
        [str(HOOK), *(args or ("101", "pre-start"))], env=full, capture_output=True, text=True, timeout=30
    )
    return proc, time.monotonic() - start


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


# --- phases that never ask ----------------------------------------------------------------------


@pytest.mark.parametrize("migrated_from", ["", None])
def test_plain_start_makes_no_request(standin, confdir, migrated_from):
    write_conf(confdir, url=standin.url)
    proc, _ = run_hook(confdir, migrated_from=migrated_from)
    assert proc.returncode == 0
    assert proc.stderr == "" and proc.stdout == ""
    assert standin.requests == []


@pytest.mark.parametrize("phase", ["post-start", "pre-stop", "post-stop"])
def test_other_phases_exit_at_once(standin, confdir, phase):
    write_conf(confdir, url=standin.url, fail="closed")
    proc, _ = run_hook(confdir, "101", phase)
    assert proc.returncode == 0 and proc.stderr == ""
    assert standin.requests == []


def test_help_lists_exit_codes_and_keys():
    proc = subprocess.run([str(HOOK), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for needle in (
        "1  vetoed: CPU vendor mismatch",
        "2  vetoed: this node lacks CPU features",
        "3  vetoed: the VM's machine version",
        "4  vetoed: any other reason",
        "5  no decision",
        "64 wrong arguments",
        "token_file",
        "ca_file",
        "MIGRATION_GUARD_TIMEOUT",
    ):
        assert needle in proc.stdout


@pytest.mark.parametrize("argv", [[], ["101"], ["101", "pre-start", "extra"]])
def test_wrong_arguments_exit_64_with_usage(argv):
    proc = subprocess.run([str(HOOK), *argv], capture_output=True, text=True)
    assert proc.returncode == 64
    assert "usage: migration-guard-hook <vmid> <phase>" in proc.stderr


# --- verdicts ------------------------------------------------------------------------------------


def test_deny_prints_one_line_and_exits_with_service_code(standin, confdir):
    write_conf(confdir, url=standin.url)
    standin.answer(body=f"verdict=deny\ncode=vendor-mismatch\nexit=1\ndecision=01J\nline={VENDOR_LINE}\n")
    proc, _ = run_hook(confdir)
    assert proc.returncode == 1
    assert proc.stderr == f"migration-guard: {VENDOR_LINE}\n"
    (req,) = standin.requests
    assert req["path"] == "/v1/decisions"
    assert req["json"] == {"vmid": 101, "target": "pve3", "source": "pve1", "mode": "enforce"}
    assert req["headers"]["Accept"] == "text/plain"
    assert req["headers"]["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("exit_field", "expected"), [("2", 2), ("3", 3), ("4", 4), ("0", 4), ("7", 4), ("x", 4), (None, 4)]
)
def test_deny_exit_code_trusted_only_within_1_to_4(standin, confdir, exit_field, expected):
    write_conf(confdir, url=standin.url)
    body = "verdict=deny\ncode=missing-features\nline=blocked migration of VM 101\n"
    if exit_field is not None:
        body += f"exit={exit_field}\n"
    standin.answer(body=body)
    proc, _ = run_hook(confdir)
    assert proc.returncode == expected
    assert proc.stderr == "migration-guard: blocked migration of VM 101\n"


def test_allow_prints_one_short_line(standin, confdir):
    write_conf(confdir, url=standin.url)
    standin.answer(body="verdict=allow\nexit=0\nline=allowed migration of VM 101 (web01) from pve1 to pve3\n")
    proc, _ = run_hook(confdir)
    assert proc.returncode == 0
    assert proc.stderr == "migration-guard: allowed migration of VM 101 (web01) from pve1 to pve3\n"


def test_warn_mode_never_vetoes_and_says_what_it_would_have_done(standin, confdir):
    write_conf(confdir, url=standin.url, mode="warn")
    standin.answer(body=f"verdict=deny\nexit=1\nline={VENDOR_LINE}\n")
    proc, _ = run_hook(confdir)
    assert proc.returncode == 0
    assert proc.stderr == f"migration-guard: warn mode, not enforced: would have {VENDOR_LINE}\n"
    assert standin.requests[0]["json"]["mode"] == "warn"


def test_off_mode_asks_nothing(standin, confdir):
    write_conf(confdir, url=standin.url)
    proc, _ = run_hook(confdir, MIGRATION_GUARD_MODE="off")
    assert proc.returncode == 0
    assert standin.requests == []


def test_env_overrides_and_json_escaping(standin, confdir):
    write_conf(confdir, url="http://127.0.0.1:1")  # wrong in the file, right in the env
    proc, _ = run_hook(
        confdir,
        migrated_from='pve"1\\x',
        MIGRATION_GUARD_URL=standin.url,
        MIGRATION_GUARD_NODE="node-ä",
        MIGRATION_GUARD_TOKEN="envtoken",
    )
    assert proc.returncode == 0
    (req,) = standin.requests
    assert req["json"]["source"] == 'pve"1\\x'
    assert req["json"]["target"] == "node-ä"
    assert req["headers"]["Authorization"] == "Bearer envtoken"


# --- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fail", "code"), [("open", 0), ("closed", 5)])
def test_service_down(confdir, fail, code):
    write_conf(confdir, url=closed_port_url(), fail=fail, timeout=2)
    proc, took = run_hook(confdir)
    assert proc.returncode == code
    assert took < 2.5
    assert "cannot reach 127.0.0.1" in proc.stderr and "Connection refused" in proc.stderr
    assert ("allowing it (fail = open)" if fail == "open" else "blocking it (fail = closed)") in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize(("fail", "code"), [("open", 0), ("closed", 5)])
def test_service_that_never_answers(confdir, fail, code):
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(8)  # the kernel accepts; nobody ever answers
    try:
        write_conf(confdir, url=f"http://127.0.0.1:{hang.getsockname()[1]}", fail=fail, timeout=1)
        proc, took = run_hook(confdir)
    finally:
        hang.close()
    assert proc.returncode == code
    assert 0.9 < took < 1.6
    assert "within the timeout" in proc.stderr


@pytest.mark.parametrize(
    ("status", "ctype", "body", "needle"),
    [
        (200, "text/plain", "this is not an answer\n", "malformed answer: no verdict"),
        (200, "application/json", '{"verdict": "deny"', "malformed answer: content type 'application/json'"),
        (500, "text/plain", "Internal Server Error", "the service failed (HTTP 500)"),
        (401, "application/json", '{"detail": "bad token"}', "the service refused the token (HTTP 401)"),
        (
            503,
            "text/plain",
            "verdict=unknown\nline=cluster pve unreachable\n",
            "the service could not decide (HTTP 503: cluster pve unreachable)",
        ),
        (422, "application/json", '{"detail": "vmid"}', "the service refused the request (HTTP 422"),
    ],
)
@pytest.mark.parametrize(("fail", "code"), [("open", 0), ("closed", 5)])
def test_bad_answers_follow_the_fail_policy(standin, confdir, status, ctype, body, needle, fail, code):
    write_conf(confdir, url=standin.url, fail=fail)
    standin.answer(status=status, body=body, content_type=ctype)
    proc, _ = run_hook(confdir)
    assert proc.returncode == code
    assert needle in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert TOKEN not in proc.stderr


@pytest.mark.parametrize(("fail", "code"), [("open", 0), ("closed", 5)])
def test_unusable_config(standin, confdir, fail, code):
    write_conf(confdir, url=standin.url, mode="sometimes", fail=fail)
    proc, _ = run_hook(confdir)
    assert proc.returncode == code
    assert "unusable config: mode = 'sometimes' is not enforce, warn or off" in proc.stderr
    assert standin.requests == []


def test_a_config_of_an_earlier_release_with_remote_unknown_still_works(standin, confdir):
    write_conf(confdir, url=standin.url, fail="closed", remote_unknown="deny")
    proc, _ = run_hook(confdir)
    assert (proc.returncode, proc.stderr) == (0, "migration-guard: allowed migration of VM 101\n")


def test_missing_config_file_fails_open_with_a_clear_line(confdir):
    proc, _ = run_hook(confdir)
    assert proc.returncode == 0
    assert "config file" in proc.stderr and "does not exist" in proc.stderr


def test_token_file_readable_by_others_warns_without_printing_the_token(standin, confdir):
    write_conf(confdir, url=standin.url)
    (confdir / "token").chmod(0o644)
    proc, _ = run_hook(confdir)
    assert proc.returncode == 0
    assert "token file" in proc.stderr and "readable by other users" in proc.stderr
    assert TOKEN not in proc.stderr + proc.stdout
    assert standin.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"


# --- chaining -----------------------------------------------------------------------------------


def previous_hook(tmp_path: Path, exit_code: int) -> tuple[Path, Path]:
    record = tmp_path / "previous.log"
    hook = tmp_path / "old-hook.sh"
    hook.write_text(
        f'#!/bin/sh\necho "$1 $2 from=[$PVE_MIGRATED_FROM] extra=[$EXTRA_VAR]" >> {record}\n'
        f'echo "old hook says hi"\nexit {exit_code}\n'
    )
    hook.chmod(0o755)
    return hook, record


def test_chained_hook_runs_first_with_same_args_and_env(standin, confdir, tmp_path):
    write_conf(confdir, url=standin.url)
    hook, record = previous_hook(tmp_path, 0)
    (confdir / "chain.conf").write_text(f"100=/nonexistent\n101={hook} local:snippets/old-hook.sh\n")
    proc, _ = run_hook(confdir, EXTRA_VAR="kept")
    assert proc.returncode == 0
    assert record.read_text() == "101 pre-start from=[pve1] extra=[kept]\n"
    assert proc.stdout == "old hook says hi\n"
    assert len(standin.requests) == 1
    proc, _ = run_hook(confdir, "101", "post-stop", EXTRA_VAR="kept")
    assert proc.returncode == 0
    assert record.read_text().endswith("101 post-stop from=[pve1] extra=[kept]\n")
    assert len(standin.requests) == 1


def test_chained_hook_failure_stops_the_start(standin, confdir, tmp_path):
    write_conf(confdir, url=standin.url)
    hook, record = previous_hook(tmp_path, 3)
    (confdir / "chain.conf").write_text(f"101={hook}\n")
    proc, _ = run_hook(confdir, migrated_from="")
    assert proc.returncode == 3
    assert "previous hookscript of VM 101 failed in pre-start (exit code 3)" in proc.stderr
    assert standin.requests == []
    proc, _ = run_hook(confdir, "101", "post-start")
    assert proc.returncode == 3  # honoured in every phase, as Proxmox would have seen it


def test_missing_chained_hook_is_skipped_with_a_line(standin, confdir):
    write_conf(confdir, url=standin.url)
    (confdir / "chain.conf").write_text("101=/nonexistent/old-hook\n")
    proc, _ = run_hook(confdir, migrated_from="")
    assert proc.returncode == 0
    assert "previous hookscript /nonexistent/old-hook of VM 101 is missing" in proc.stderr


def test_a_chain_map_that_is_not_utf8_never_stops_a_start(standin, confdir):
    write_conf(confdir, url=standin.url)
    (confdir / "chain.conf").write_bytes(b"101=/opt/old-hook\xff\n")
    proc, _ = run_hook(confdir, migrated_from="")
    assert (proc.returncode, proc.stderr) == (0, "")


# --- a plain start of a VM left with lock: migrate (root's `qm start --skiplock`) ------------------

LOCKED_CONF = """boot: order=scsi0
cores: 4
cpu: x86-64-v3,flags=+aes
lock: migrate
name: web01
smbios1: uuid=7b3e1c2a-1111-2222-3333-444455556666
"""


class Recorder:
    """A listening socket that records every connection made to it (and answers nothing)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def connections(self) -> int:
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                return n
            conn.close()
            n += 1


@pytest.mark.parametrize("migrated_from", ["", None])
@pytest.mark.parametrize("service", ["listening", "down"])
def test_start_of_a_vm_locked_migrate_is_never_blocked(confdir, tmp_path, migrated_from, service):
    """Remote migration never runs the target's hook (the tunnel refuses a hookscript line), so a
    pre-start with lock: migrate and no PVE_MIGRATED_FROM is a root's `qm start --skiplock`."""
    qemu = tmp_path / "qemu-server"
    qemu.mkdir()
    (qemu / "101.conf").write_text(LOCKED_CONF)
    recorder = Recorder()
    try:
        url = recorder.url if service == "listening" else closed_port_url()
        write_conf(confdir, url=url, fail="closed", timeout=1)
        # MIGRATION_GUARD_PVE_QEMU_DIR: where earlier releases read the VM's config (and its lock)
        proc, _ = run_hook(confdir, migrated_from=migrated_from, MIGRATION_GUARD_PVE_QEMU_DIR=str(qemu))
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == "" and proc.stdout == ""
        assert recorder.connections() == 0
    finally:
        recorder.sock.close()


# --- HTTPS ----------------------------------------------------------------------------------------


@pytest.fixture
def tls_standin(tmp_path):
    import ssl

    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    s = StandIn()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    s.server.socket = ctx.wrap_socket(s.server.socket, server_side=True)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    s.url = s.url.replace("http://", "https://")
    yield s, ca_file
    s.close()


def test_https_verifies_against_ca_file(tls_standin, confdir):
    standin, ca_file = tls_standin
    write_conf(confdir, url=standin.url, ca_file=ca_file)
    standin.answer(body=f"verdict=deny\nexit=1\nline={VENDOR_LINE}\n")
    proc, _ = run_hook(confdir)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == f"migration-guard: {VENDOR_LINE}\n"
    assert standin.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"


def test_https_with_an_untrusted_certificate_is_no_decision(tls_standin, confdir):
    standin, _ = tls_standin
    write_conf(confdir, url=standin.url, fail="closed")
    proc, _ = run_hook(confdir)
    assert proc.returncode == 5
    assert "TLS certificate of 127.0.0.1 not trusted" in proc.stderr and "check ca_file" in proc.stderr


def test_a_server_that_keeps_the_connection_open_is_read_by_content_length(confdir):
    body = f"verdict=deny\nexit=1\nline={VENDOR_LINE}\n{END}".encode()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    kept: list[socket.socket] = []

    def serve() -> None:
        conn, _ = srv.accept()
        kept.append(conn)
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Connection: keep-alive\r\n\r\n%s" % (len(body), body)
        )

    threading.Thread(target=serve, daemon=True).start()
    try:
        write_conf(confdir, url=f"http://127.0.0.1:{srv.getsockname()[1]}", timeout=3)
        proc, took = run_hook(confdir)
    finally:
        srv.close()
        for c in kept:
            c.close()
    assert proc.returncode == 1 and took < 1.5
    assert proc.stderr == f"migration-guard: {VENDOR_LINE}\n"


# --- a cut answer is no answer -------------------------------------------------------------------


def raw_server(answer: bytes) -> tuple[socket.socket, str]:
    """Accepts one connection, reads the request, sends ``answer`` as it is and closes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.getsockname()[1]}"


ALLOW = b"verdict=allow\ncode=ok\nexit=0\ndecision=01CUT\nline=allowed migration of VM 101\n"
TEXT = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
CHUNKED = TEXT + b"Transfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.mark.parametrize(
    ("answer", "needle"),
    [
        # the connection closes before Content-Length bytes arrived
        (TEXT + b"Content-Length: %d\r\n\r\n" % (len(ALLOW) + 6) + ALLOW[:14], "cut answer: 14 of 83 bytes"),
        (TEXT + b"Content-Length: %d\r\n\r\n" % (len(ALLOW) + 6) + ALLOW, "cut answer: 77 of 83 bytes"),
        # complete by its Content-Length, but the service's end line is missing
        (TEXT + b"Content-Length: %d\r\n\r\n" % len(ALLOW) + ALLOW, "no end line"),
        # a Content-Length that cuts a longer body (read at once, or the first 14 bytes alone)
        (
            TEXT + b"Content-Length: 14\r\n\r\n" + ALLOW + b"end=1\n",
            "longer than its Content-Length|no end line",
        ),
        # chunked: the closing 0-size chunk never came
        (CHUNKED + chunk(ALLOW) + chunk(b"end=1\n"), "cut chunked answer"),
        # chunked: a chunk shorter than its size line says
        (CHUNKED + b"80\r\n" + ALLOW, "cut chunked answer"),
        # chunked: a size line that is no number
        (CHUNKED + b"zz\r\n" + ALLOW + b"\r\n0\r\n\r\n", "malformed chunked answer"),
        # read until close (no length at all): whatever came, without the end line it is not whole
        (TEXT + b"Connection: close\r\n\r\n" + ALLOW[:30], "no end line"),
        # both framings at once: ambiguous
        (
            TEXT
            + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % (len(ALLOW) + 6)
            + ALLOW
            + b"end=1\n",
            "both Content-Length and Transfer-Encoding",
        ),
        # two different lengths
        (TEXT + b"Content-Length: 87\r\nContent-Length: 14\r\n\r\n" + ALLOW + b"end=1\n", "Content-Length"),
    ],
)
def test_a_cut_allow_is_no_decision(confdir, answer, needle):
    srv, url = raw_server(answer)
    try:
        write_conf(confdir, url=url, fail="closed", timeout=3)
        proc, took = run_hook(confdir)
    finally:
        srv.close()
    assert proc.returncode == 5, proc.stderr
    assert any(n in proc.stderr for n in needle.split("|")), proc.stderr
    assert "blocking it (fail = closed)" in proc.stderr and proc.stderr.count("\n") == 1
    assert took < 2.5


@pytest.mark.parametrize(
    "answer",
    [
        CHUNKED + chunk(ALLOW[:20]) + chunk(ALLOW[20:] + b"end=1\n") + b"0\r\n\r\n",
        TEXT + b"Connection: close\r\n\r\n" + ALLOW + b"end=1\n",
        TEXT + b"Content-Length: %d\r\n\r\n" % (len(ALLOW) + 6) + ALLOW + b"end=1\n",
    ],
)
def test_a_whole_allow_is_an_allow(confdir, answer):
    srv, url = raw_server(answer)
    try:
        write_conf(confdir, url=url, fail="closed", timeout=3)
        proc, _ = run_hook(confdir)
    finally:
        srv.close()
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "migration-guard: allowed migration of VM 101\n"
