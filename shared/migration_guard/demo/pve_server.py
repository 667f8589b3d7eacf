"""A Proxmox-VE-shaped HTTPS server that serves a cluster from a JSON scenario.

Used by the tests (proxmoxer speaks real HTTPS to it) and by ``migration-guard serve --demo``.
It answers the read endpoints the guard uses, shaped like Proxmox VE 9.x answers them
(``{"data": ...}``, Proxmox's status codes), checks the ``PVEAPIToken`` header, and has
test controls under ``/_test/`` (request counts, fault injection, VM edits, node updates).

Run as a process: ``python -m migration_guard.demo.pve_server --scenario demo|FILE [--port N]``
prints ``READY https://127.0.0.1:PORT ca=PATH`` and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import copy
import hmac
import json
import signal
import ssl
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from migration_guard.demo.pve_cluster_routes import post_route, route
from migration_guard.demo.pve_scenario import (
    ApiError,
    ClusterState,
    Faults,
    cpu_fixture,
    load_scenario,
    put_node,
    put_vm,
    set_faults,
)
from migration_guard.errors import ConfigError

#: the names other parts use (``cpu_fixture``, a recorded CPU, is answered here for them)
__all__ = ["RunningServer", "cpu_fixture", "main", "start_server"]

API_PREFIX = "/api2/json"


# --- HTTP ---------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server_version = "pve-api-daemon/3.0"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    state: ClusterState  # set on the subclass per server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read counts, not logs
        pass

    # the answer helpers
    def _send(self, status: int, body: dict | list | None, reason: str | None = None) -> None:
        payload = json.dumps(body).encode() if body is not None else b""
        self.send_response(status, reason)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, err: ApiError) -> None:
        # pve-http-server PVE/APIServer/Formatter/Standard.pm (json): ``data`` null, the error's
        # ``message`` and, for a parameter error, ``errors`` (parameter -> message)
        body: dict[str, Any] = {"data": None, "message": err.message + "\n"}
        if err.errors:
            body["errors"] = err.errors
        self._send(err.status, body, reason=err.message)

    def _raw(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _hostile(self, kind: str) -> bool:
        """A 200 that is not Proxmox's JSON, as a proxy, a load balancer or a cut connection
        gives it (fault ``bad_answer``). False for an unknown kind."""
        bodies = {
            "html": (
                b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad "
                b"Gateway</h1></center><hr><center>nginx</center></body></html>",
                "text/html",
            ),
            "truncated": (b'{"data":{"cpu":"host","name":"db1","hookscr', "application/json;charset=UTF-8"),
            "null": (b'{"data":null}', "application/json;charset=UTF-8"),
            "list": (b'{"data":[]}', "application/json;charset=UTF-8"),
            "string": (b'{"data":"ok"}', "application/json;charset=UTF-8"),
            "object": (b'{"data":{}}', "application/json;charset=UTF-8"),
            "nodata": (b'{"success":1}', "application/json;charset=UTF-8"),
        }
        if kind not in bodies:
            return False
        payload, ctype = bodies[kind]
        self._raw(200, payload, ctype)
        return True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        if path.startswith("/_test/"):
            self._control(method, path)
            return
        if not path.startswith(API_PREFIX):
            self._send(404, {"data": None, "message": "not found"})
            return
        api_path = path[len(API_PREFIX) :] or "/"
        state = self.state
        with state.lock:
            state.counts[api_path] += 1
            faults = copy.copy(state.faults)
        if faults.applies(api_path):
            if faults.hang:
                state.hang_release.wait(600)
                return
            if faults.latency_s:
                time.sleep(faults.latency_s)
        if not self._authorized(faults):
            # pve-http-server PVE/APIServer/AnyEvent.pm: a failed authentication is answered
            # after a 3 s delay (against password guessing), 401 with an empty body
            time.sleep(state.auth_failure_delay_s)
            self._raw(401, b"", "application/json;charset=UTF-8")
            return
        if faults.status and faults.applies(api_path):
            self._error(ApiError(faults.status, f"simulated failure {faults.status}"))
            return
        if faults.bad_answer and faults.applies(api_path) and self._hostile(faults.bad_answer):
            return
        node_name = api_path.split("/")[2] if api_path.startswith("/nodes/") else ""
        node = state.node(node_name) if node_name else None
        if node is not None and (node_name in faults.powered_off or node.get("powered_off")):
            # pve-manager PVE/API2/Nodes.pm calls are ``proxyto => 'node'``: pveproxy
            # (pve-http-server PVE/APIServer/AnyEvent.pm ``proxy_request``) forwards them to the
            # node and gives up only after its 30 s timeout when the node is powered off while
            # corosync still lists it online; then 595
            if not state.hang_release.wait(state.proxy_timeout_s):
                self._error(ApiError(595, f"Connection timed out (node {node_name})"))
            return
        if method not in ("GET", "POST"):
            self._error(ApiError(501, f"Method '{method} {api_path}' not implemented"))
            return
        try:
            with state.lock:
                if method == "POST":
                    data = post_route(state, api_path, self._form())
                else:
                    data = route(state, api_path, query)
        except ApiError as err:
            self._error(err)
            return
        self._send(200, {"data": data})

    def _form(self) -> dict[str, str]:
        """A POST's parameters: proxmoxer sends them form-encoded (as Proxmox's clients do)."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}

    def _authorized(self, faults: Faults) -> bool:
        if faults.reject_token:
            return False
        token = self.state.token
        expected = f"PVEAPIToken={token.get('user', '')}!{token.get('name', '')}={token.get('value', '')}"
        given = self.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), expected.encode())

    def _control(self, method: str, path: str) -> None:
        state = self.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self._send(400, {"error": "body is not JSON"})
            return
        if path == "/_test/requests" and method == "GET":
            with state.lock:
                counts = dict(state.counts)
            self._send(200, {"total": sum(counts.values()), "paths": counts})
        elif path == "/_test/reset" and method == "POST":
            with state.lock:
                state.counts.clear()
                state.faults = Faults()
            state.hang_release.set()
            state.hang_release = threading.Event()
            self._send(200, {"ok": True})
        elif path == "/_test/faults" and method == "POST":
            set_faults(state, **body)
            self._send(200, {"ok": True})
        elif path == "/_test/vms" and method == "POST":
            put_vm(state, body)
            self._send(200, {"ok": True})
        elif path == "/_test/nodes" and method == "POST" and isinstance(body, dict):
            try:
                put_node(state, str(body.pop("name", "")), body)
            except KeyError as exc:
                self._send(404, {"error": str(exc.args[0])})
                return
            self._send(200, {"ok": True})
        else:
            self._send(404, {"error": f"no test control {method} {path}"})


@dataclass(slots=True)
class RunningServer:
    url: str
    host_port: str
    ca_path: str
    state: ClusterState
    _server: ThreadingHTTPServer
    _thread: threading.Thread
    _tmp: tempfile.TemporaryDirectory

    @property
    def token(self) -> dict:
        return dict(self.state.token)

    @property
    def scenario(self) -> dict:
        return self.state.scenario

    def requests(self) -> dict[str, int]:
        with self.state.lock:
            return dict(self.state.counts)

    def request_count(self) -> int:
        return sum(self.requests().values())

    def reset_counts(self) -> None:
        with self.state.lock:
            self.state.counts.clear()

    def set_faults(self, **faults: Any) -> None:
        set_faults(self.state, **faults)

    def put_vm(self, vm: dict) -> None:
        put_vm(self.state, vm)

    def put_node(self, name: str, **changes: Any) -> None:
        """Change what a node reports (pve_scenario.put_node): an update and a reboot."""
        put_node(self.state, name, changes)

    def stop(self) -> None:
        self.state.hang_release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._tmp.cleanup()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that hangs up mid-handshake or mid-request (a timeout test, a port probe) is
        # normal here: no traceback on stderr; anything else is still reported
        if isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


def start_server(
    scenario: dict | str | Path = "demo",
    host: str = "127.0.0.1",
    port: int = 0,
    cert_dir: str | None = None,
    *,
    proxy_timeout_s: float | None = None,
    auth_failure_delay_s: float | None = None,
) -> RunningServer:
    """Start serving ``scenario`` over HTTPS in a background thread. ``proxy_timeout_s`` (30 s)
    and ``auth_failure_delay_s`` (3 s), Proxmox's own delays, may be made shorter for tests."""
    try:
        import trustme
    except ImportError:
        raise ConfigError(
            "the demo's Proxmox-shaped server needs trustme (its TLS certificate), which is not "
            "installed: pip install 'pve-migration-guard[demo]'"
        ) from None

    state = ClusterState(load_scenario(scenario))
    if proxy_timeout_s is not None:
        state.proxy_timeout_s = proxy_timeout_s
    if auth_failure_delay_s is not None:
        state.auth_failure_delay_s = auth_failure_delay_s
    tmp = tempfile.TemporaryDirectory(prefix="pve-testserver-")
    directory = Path(cert_dir or tmp.name)
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
    ca_path = directory / "pve-test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)

    handler = type("Handler", (_Handler,), {"state": state})
    server = _Server((host, port), handler)
    # the TLS handshake happens in each connection's own thread, not serialised in accept()
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    bound_port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="pve-testserver", daemon=True)
    thread.start()
    host_port = f"{host}:{bound_port}"
    return RunningServer(
        url=f"https://{host_port}",
        host_port=host_port,
        ca_path=str(ca_path),
        state=state,
        _server=server,
        _thread=thread,
        _tmp=tmp,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m migration_guard.demo.pve_server",
        description="Serve a Proxmox-shaped cluster from a scenario.",
    )
    parser.add_argument(
        "--scenario", default="demo", help="a built-in scenario name (demo, e2e, ...) or a JSON file"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state-dir", default=None, help="where to write the CA certificate")
    args = parser.parse_args(argv)
    try:
        server = start_server(args.scenario, host=args.host, port=args.port, cert_dir=args.state_dir)
    except ConfigError as exc:
        print(f"pve-testserver: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"READY {server.url} ca={server.ca_path}", flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
