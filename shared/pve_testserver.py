"""A Proxmox-VE-shaped HTTPS server that serves a cluster from a JSON scenario.

Used by the tests (proxmoxer speaks real HTTPS to it) and by ``migration-guard serve --demo``.
It answers the read endpoints the guard uses, shaped like Proxmox VE 9.x answers them
(``{"data": ...}``, Proxmox's status codes), checks the ``PVEAPIToken`` header, and has
test controls under ``/_test/`` (request counts, fault injection, VM edits).

Run as a process: ``python -m shared.pve_testserver --scenario demo|FILE [--port N]``
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
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .errors import ConfigError

API_PREFIX = "/api2/json"


# --- scenario ---------------------------------------------------------------------------------


def load_scenario(source: dict | str | Path) -> dict:
    """A scenario as a dict: given as a dict, the name of a built-in one ("demo", "e2e", ...) or a path."""
    if isinstance(source, dict):
        return copy.deepcopy(source)
    text_source = str(source)
    builtin = _builtin_scenario(text_source)
    if builtin is not None:
        return builtin
    path = Path(text_source)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"scenario file {path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"scenario file {path} cannot be read: {exc}") from exc


def _builtin_scenario(name: str) -> dict | None:
    data = resources.files("shared").joinpath("data")
    if "/" in name or name.endswith(".json"):
        return None
    entry = (
        data.joinpath("demo_scenario.json") if name == "demo" else data.joinpath("scenarios", f"{name}.json")
    )
    if not entry.is_file():
        return None
    return json.loads(entry.read_text(encoding="utf-8"))


def cpu_fixture(ref: str) -> dict:
    """A real CPU of ``shared/data/cpus/<ref>.json`` (``model_name``, ``vendor_id``, ``flags``, ...)."""
    entry = resources.files("shared").joinpath("data", "cpus", f"{ref}.json")
    if not entry.is_file():
        raise ConfigError(f"scenario names cpu_ref {ref!r}, but shared/data/cpus/{ref}.json does not exist")
    return json.loads(entry.read_text(encoding="utf-8"))


def _node_cpu(node: dict) -> dict:
    """The node's CPU as ``{"model", "flags": [...], "vendor_id"?, "bugs"?}``."""
    if "cpu" in node:
        return node["cpu"]
    fixture = cpu_fixture(node["cpu_ref"])
    return {
        "model": fixture.get("model_name", ""),
        "flags": fixture.get("flags", []),
        "vendor_id": fixture.get("vendor_id"),
        "bugs": fixture.get("bugs"),
        "family": fixture.get("cpu_family"),
        "model_number": fixture.get("model"),
    }


def _qemu_flags(node: dict) -> list[str]:
    """What the node's KVM offers in QEMU names: given by the scenario, else derived from the
    node's /proc/cpuinfo flags with the engine's KVM rules (a simulation of pvestatd's report)."""
    if "qemu_flags" in node:
        return sorted(node["qemu_flags"])
    from . import engine
    from .hosts import HostCpu, vendor_of

    cpu = _node_cpu(node)
    flags = frozenset(cpu.get("flags") or ())
    bugs = cpu.get("bugs")
    host = HostCpu(
        name=node["name"],
        vendor=vendor_of(cpu.get("vendor_id"), cpu.get("model", ""), flags),
        model=cpu.get("model", ""),
        flags=flags,
        bugs=frozenset(bugs) if bugs is not None else None,
        family=cpu.get("family"),
        model_number=cpu.get("model_number"),
    )
    off = engine.offer(host)
    return sorted(engine._features(off.bits & ~off.undecidable))


# --- state shared by the handler threads ------------------------------------------------------


@dataclass(slots=True)
class Faults:
    latency_s: float = 0.0
    status: int = 0  # answer every matching request with this status
    paths: tuple[str, ...] = ()  # path prefixes (after /api2/json) the status/latency/hang apply to
    hang: bool = False  # accept, then never answer
    reject_token: bool = False  # 401 for every token
    node_offline: tuple[str, ...] = ()
    drop_flags: tuple[str, ...] = ()  # nodes whose status lacks cpuinfo.flags

    def applies(self, path: str) -> bool:
        return not self.paths or any(path.startswith(p) for p in self.paths)


class ClusterState:
    def __init__(self, scenario: dict) -> None:
        self.lock = threading.Lock()
        self.scenario = scenario
        self.faults = Faults()
        self.counts: Counter[str] = Counter()
        self.hang_release = threading.Event()
        self._qemu_flags_cache: dict[str, list[str]] = {}

    # scenario views
    @property
    def token(self) -> dict:
        return self.scenario.get("token", {})

    def node(self, name: str) -> dict | None:
        return next((n for n in self.scenario.get("nodes", []) if n["name"] == name), None)

    def online(self, node: dict) -> bool:
        return bool(node.get("online", True)) and node["name"] not in self.faults.node_offline

    def vm(self, vmid: int) -> dict | None:
        return next((v for v in self.scenario.get("vms", []) if int(v["vmid"]) == vmid), None)

    def qemu_flags(self, node: dict) -> list[str]:
        name = node["name"]
        if name not in self._qemu_flags_cache:
            self._qemu_flags_cache[name] = _qemu_flags(node)
        return self._qemu_flags_cache[name]


class ApiError(Exception):
    def __init__(self, status: int, message: str, errors: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


# --- the endpoints ------------------------------------------------------------------------------


def _pve_version(scenario: dict) -> str:
    return str(scenario.get("pve_version", "9.2.1"))


def _privileges(state: ClusterState) -> set[str]:
    return set(state.token.get("privileges", ["VM.Audit", "Sys.Audit", "VM.Migrate"]))


def _require(state: ClusterState, privilege: str, path: str) -> None:
    if privilege not in _privileges(state):
        raise ApiError(403, f"Permission check failed ({path}, {privilege})")


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def route(state: ClusterState, path: str, query: dict[str, str]) -> Any:
    """The answer's ``data`` for a GET of ``path`` (below /api2/json). Raises ApiError."""
    sc = state.scenario
    parts = [unquote(p) for p in path.strip("/").split("/") if p]
    if parts == ["version"]:
        version = _pve_version(sc)
        return {"version": version, "release": ".".join(version.split(".")[:2]), "repoid": "0123abcd"}
    if parts == ["nodes"]:
        _require(state, "Sys.Audit", "/nodes")
        return [
            {
                "node": n["name"],
                "status": "online" if state.online(n) else "offline",
                "type": "node",
                "id": f"node/{n['name']}",
                "maxcpu": n.get("cpus", 16),
                "level": "",
            }
            for n in sc.get("nodes", [])
        ]
    if parts == ["cluster", "status"]:
        nodes = sc.get("nodes", [])
        answer: list[dict] = [
            {
                "type": "cluster",
                "id": "cluster",
                "name": sc.get("cluster", "pve"),
                "nodes": len(nodes),
                "quorate": 1,
                "version": 3,
            }
        ]
        for index, n in enumerate(nodes, start=1):
            answer.append(
                {
                    "type": "node",
                    "id": f"node/{n['name']}",
                    "name": n["name"],
                    "nodeid": index,
                    "online": 1 if state.online(n) else 0,
                    "local": 1 if index == 1 else 0,
                    "ip": f"192.0.2.{index}",
                    "level": "",
                }
            )
        return answer
    if parts == ["cluster", "resources"]:
        kind = query.get("type")
        if kind not in (None, "vm"):
            return []
        rows = []
        for vm in sc.get("vms", []):
            node = state.node(vm["node"])
            online = node is not None and state.online(node)
            rows.append(
                {
                    "id": f"qemu/{vm['vmid']}",
                    "type": "qemu",
                    "vmid": int(vm["vmid"]),
                    "node": vm["node"],
                    "name": vm.get("name", f"VM {vm['vmid']}"),
                    "status": vm.get("status", "stopped") if online else "unknown",
                    "tags": vm.get("tags", ""),
                    "template": 1 if vm.get("template") else 0,
                    "maxcpu": vm.get("cores", 2),
                    "maxmem": 4294967296,
                }
            )
        return rows
    if parts == ["cluster", "qemu", "cpu-flags"]:
        if not sc.get("cpu_flags_endpoint", True) or _version_tuple(_pve_version(sc)) < (9, 2):
            raise ApiError(501, "Method 'GET /cluster/qemu/cpu-flags' not implemented")
        _require(state, "Sys.Audit", "/nodes")
        offered: dict[str, list[str]] = {}
        for n in sc.get("nodes", []):
            for flag in state.qemu_flags(n):
                offered.setdefault(flag, []).append(n["name"])
        return [{"name": flag, "supported-on": sorted(nodes)} for flag, nodes in sorted(offered.items())]
    if len(parts) >= 2 and parts[0] == "nodes":
        return _node_route(state, parts[1], parts[2:], query)
    raise ApiError(501, f"Method 'GET /{'/'.join(parts)}' not implemented")


def _node_route(state: ClusterState, name: str, rest: list[str], query: dict[str, str]) -> Any:
    node = state.node(name)
    if node is None:
        raise ApiError(500, f"hostname lookup '{name}' failed - failed to get address info for: {name}")
    if not state.online(node):
        raise ApiError(595, f"no route to host (node {name} is offline)")
    if rest == ["status"]:
        _require(state, "Sys.Audit", f"/nodes/{name}")
        cpu = _node_cpu(node)
        cpuinfo: dict[str, Any] = {
            "model": cpu.get("model", ""),
            "cpus": node.get("cpus", 16),
            "sockets": node.get("sockets", 1),
            "cores": node.get("cores", 8),
            "mhz": str(node.get("mhz", "2400.000")),
            "hvm": "1",
            "user_hz": 100,
        }
        if name not in state.faults.drop_flags and not node.get("drop_flags"):
            cpuinfo["flags"] = " ".join(cpu.get("flags") or ())
        if node.get("cpuinfo_vendor"):  # a node with pve-common 9.2 (2026): PVE/ProcFSTools.pm read_cpuinfo
            # adds vendor (the vendor_id line, 'unknown' when absent) and family (cpu family, 0 when absent)
            cpuinfo["vendor"] = cpu.get("vendor_id") or "unknown"
            cpuinfo["family"] = int(cpu.get("family") or 0)
        version = _pve_version(state.scenario)
        return {
            "cpuinfo": cpuinfo,
            "pveversion": f"pve-manager/{version}/0123abcd",
            "kversion": node.get("kversion", "Linux 6.14.8-2-pve #1 SMP PREEMPT_DYNAMIC PMX 6.14.8-2"),
            "uptime": 123456,
            "cpu": 0.05,
            "memory": {"total": 137438953472, "used": 34359738368, "free": 103079215104},
        }
    if rest == ["capabilities", "qemu", "machines"]:
        _require(state, "Sys.Audit", f"/nodes/{name}")
        qemu = str(node.get("qemu_version", "9.2.0"))
        machines = node.get("machines")
        if machines is None:
            short = ".".join(qemu.split(".")[:2])
            machines = [f"pc-q35-{short}", f"pc-i440fx-{short}"]
        return [
            {"id": m, "type": "q35" if "q35" in m else "i440fx", "version": m.rsplit("-", 1)[-1]}
            for m in machines
        ]
    if rest == ["capabilities", "qemu", "cpu"]:
        return []
    if rest == ["qemu"]:  # qemu-server's vmlist: VMs the token may audit; ``full`` adds the QMP fields
        full = query.get("full") in ("1", "true")
        return [
            _vm_status(node, vm, full)
            for vm in state.scenario.get("vms", [])
            if vm["node"] == name and "VM.Audit" in _privileges(state)
        ]
    if len(rest) >= 2 and rest[0] == "qemu":
        try:
            vmid = int(rest[1])
        except ValueError as exc:
            raise ApiError(
                400, "Parameter verification failed.", {"vmid": "type check ('integer') failed"}
            ) from exc
        vm = state.vm(vmid)
        if vm is None or vm["node"] != name:
            raise ApiError(500, f"Configuration file 'nodes/{name}/qemu-server/{vmid}.conf' does not exist")
        return _vm_route(state, node, vm, rest[2:], query)
    raise ApiError(501, f"Method 'GET /nodes/{name}/{'/'.join(rest)}' not implemented")


def _vm_status(node: dict, vm: dict, full: bool) -> dict[str, Any]:
    """One VM's status as qemu-server's ``vmstatus`` gives it (``full``: with the QMP fields)."""
    status = vm.get("status", "stopped")
    answer: dict[str, Any] = {
        "vmid": int(vm["vmid"]),
        "status": status,
        "name": vm.get("name", ""),
        "cpus": vm.get("cores", 2),
        "maxmem": 4294967296,
    }
    if vm.get("tags"):
        answer["tags"] = vm["tags"]
    if status == "running" and full:
        answer["qmpstatus"] = status
        answer["running-machine"] = vm.get("running_machine", "pc-q35-9.2+pve0")
        answer["running-qemu"] = vm.get("running_qemu", node.get("qemu_version", "9.2.0"))
    return answer


def _vm_route(state: ClusterState, node: dict, vm: dict, rest: list[str], query: dict[str, str]) -> Any:
    vmid = int(vm["vmid"])
    if rest == ["config"]:
        _require(state, "VM.Audit", f"/vms/{vmid}")
        config = {"name": vm.get("name", f"VM {vmid}"), "digest": "0" * 40}
        config.update(vm.get("config", {}))
        if vm.get("tags"):
            config.setdefault("tags", vm["tags"])
        return config
    if rest == ["status", "current"]:
        _require(state, "VM.Audit", f"/vms/{vmid}")
        return _vm_status(node, vm, True)
    if rest == ["migrate"]:
        _require(state, "VM.Migrate", f"/vms/{vmid}")
        lock = (vm.get("config") or {}).get("lock")
        if lock:  # qemu-server's check_lock, before anything else
            raise ApiError(500, f"VM is locked ({lock})")
        target = query.get("target")
        others = [n for n in state.scenario.get("nodes", []) if n["name"] != node["name"]]
        not_allowed: dict[str, dict] = {}
        for n in others:
            blockers = vm.get("not_allowed", {}).get(n["name"])
            if blockers:
                not_allowed[n["name"]] = blockers
        answer = {
            "running": 1 if vm.get("status") == "running" else 0,
            "allowed_nodes": [n["name"] for n in others if n["name"] not in not_allowed],
            "not_allowed_nodes": not_allowed,
            "local_disks": vm.get("local_disks", []),
            "local_resources": vm.get("local_resources", []),
            "mapped-resources": vm.get("mapped_resources", []),
        }
        if target is not None and state.node(target) is None:
            raise ApiError(
                400, "Parameter verification failed.", {"target": f"no such cluster node '{target}'"}
            )
        return answer
    raise ApiError(501, f"Method 'GET /nodes/{node['name']}/qemu/{vmid}/{'/'.join(rest)}' not implemented")


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
        body: dict[str, Any] = {"data": None}
        if err.errors:
            body["errors"] = err.errors
        else:
            body["message"] = err.message + "\n"
        self._send(err.status, body, reason=err.message)

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
            self._error(ApiError(401, "authentication failure"))
            return
        if faults.status and faults.applies(api_path):
            self._error(ApiError(faults.status, f"simulated failure {faults.status}"))
            return
        if method != "GET":
            self._error(ApiError(501, f"Method '{method} {api_path}' not implemented"))
            return
        try:
            with state.lock:
                data = route(state, api_path, query)
        except ApiError as err:
            self._error(err)
            return
        self._send(200, {"data": data})

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
        else:
            self._send(404, {"error": f"no test control {method} {path}"})


def set_faults(state: ClusterState, **faults: Any) -> None:
    """Replace the active faults (no arguments clears them)."""

    def tup(value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        return (value,) if isinstance(value, str) else tuple(value)

    new = Faults(
        latency_s=float(faults.get("latency_s") or 0.0),
        status=int(faults.get("status") or 0),
        paths=tup(faults.get("paths")),
        hang=bool(faults.get("hang")),
        reject_token=bool(faults.get("reject_token")),
        node_offline=tup(faults.get("node_offline")),
        drop_flags=tup(faults.get("drop_flags")),
    )
    with state.lock:
        was_hanging = state.faults.hang
        state.faults = new
    if was_hanging and not new.hang:
        state.hang_release.set()
        state.hang_release = threading.Event()


def put_vm(state: ClusterState, vm: dict) -> None:
    """Add a VM, or replace the one with the same vmid."""
    with state.lock:
        vms = state.scenario.setdefault("vms", [])
        vms[:] = [v for v in vms if int(v["vmid"]) != int(vm["vmid"])]
        vms.append(vm)


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
    scenario: dict | str | Path = "demo", host: str = "127.0.0.1", port: int = 0, cert_dir: str | None = None
) -> RunningServer:
    """Start serving ``scenario`` over HTTPS in a background thread."""
    import trustme

    state = ClusterState(load_scenario(scenario))
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
        prog="python -m shared.pve_testserver", description="Serve a Proxmox-shaped cluster from a scenario."
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
