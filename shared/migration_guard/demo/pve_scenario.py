"""The test server's scenario and state: the scenario JSON (built-in or a file), the node and VM
views the routes read, the injected faults, the token's privileges and the Proxmox versions.
Imports nothing of the engine."""

from __future__ import annotations

import copy
import json
import threading
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from migration_guard.demo.pve_kvm import recorded_qemu_flags
from migration_guard.errors import ConfigError

#: pve-http-server answers a failed authentication after this delay (a scenario's
#: ``auth_failure_delay_s`` or start_server's argument overrides it)
DEFAULT_AUTH_FAILURE_DELAY_S = 3.0
#: pveproxy gives up on a node it proxies to after this long (``proxy_timeout_s`` overrides it)
DEFAULT_PROXY_TIMEOUT_S = 30.0


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
    data = resources.files("migration_guard").joinpath("data")
    if "/" in name or name.endswith(".json"):
        return None
    entry = (
        data.joinpath("demo_scenario.json") if name == "demo" else data.joinpath("scenarios", f"{name}.json")
    )
    if not entry.is_file():
        return None
    return json.loads(entry.read_text(encoding="utf-8"))


def cpu_fixture(ref: str) -> dict:
    """A real CPU of ``shared/migration_guard/data/cpus/<ref>.json`` (``model_name``, ``vendor_id``,
    ``flags``, ...)."""
    entry = resources.files("migration_guard").joinpath("data", "cpus", f"{ref}.json")
    if not entry.is_file():
        raise ConfigError(
            f"scenario names cpu_ref {ref!r}, but shared/migration_guard/data/cpus/{ref}.json does not exist"
        )
    return json.loads(entry.read_text(encoding="utf-8"))


def node_cpu(node: dict) -> dict:
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
    #: nodes powered off but still listed online: requests proxied to them hang (see node_route)
    powered_off: tuple[str, ...] = ()
    #: a hostile 200 for the matching paths: "html" (a proxy's error page), "truncated" (JSON cut
    #: off), "null" / "list" / "string" (``data`` of the wrong kind), "nodata" (JSON without data)
    bad_answer: str = ""
    #: VMs whose QMP does not answer in time: status without running-machine / running-qemu
    qmp_busy: tuple[str, ...] = ()

    def applies(self, path: str) -> bool:
        return not self.paths or any(path.startswith(p) for p in self.paths)


class ClusterState:
    def __init__(self, scenario: dict) -> None:
        self.lock = threading.Lock()
        self.scenario = scenario
        self.faults = Faults()
        self.counts: Counter[str] = Counter()
        self.hang_release = threading.Event()
        self._qemu_flags_cache: dict[str, list[str] | None] = {}
        #: seconds pveproxy waits for a node before it gives up (its proxy timeout: 30 s)
        self.proxy_timeout_s = float(scenario.get("proxy_timeout_s", DEFAULT_PROXY_TIMEOUT_S))
        #: seconds pve-http-server waits before it answers a failed authentication (3 s)
        self.auth_failure_delay_s = float(scenario.get("auth_failure_delay_s", DEFAULT_AUTH_FAILURE_DELAY_S))

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

    def qemu_flags(self, node: dict) -> list[str] | None:
        name = node["name"]
        if name not in self._qemu_flags_cache:
            self._qemu_flags_cache[name] = recorded_qemu_flags(node)
        return self._qemu_flags_cache[name]


class ApiError(Exception):
    def __init__(self, status: int, message: str, errors: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


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
        powered_off=tup(faults.get("powered_off")),
        bad_answer=str(faults.get("bad_answer") or ""),
        qmp_busy=tuple(str(v) for v in tup(faults.get("qmp_busy"))),
    )
    with state.lock:
        if "proxy_timeout_s" in faults:
            state.proxy_timeout_s = float(faults["proxy_timeout_s"])
        if "auth_failure_delay_s" in faults:
            state.auth_failure_delay_s = float(faults["auth_failure_delay_s"])
    with state.lock:
        was_hanging = state.faults.hang or bool(state.faults.powered_off)
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


#: what a test may change of a node between two reads (``put_node``)
NODE_FIELDS = ("cpu", "qemu_flags", "qemu_version", "pve_version", "machines", "kversion")


def put_node(state: ClusterState, name: str, changes: dict) -> None:
    """Change what node ``name`` reports, as an update and the reboot after it do. A BIOS or
    microcode update that switches TSX off removes ``hle`` and ``rtm`` from /proc/cpuinfo (the node
    status' ``cpuinfo.flags``: pve-common PVE/ProcFSTools.pm ``read_cpuinfo``) and from what KVM
    offers (pvestatd detects ``cpuflags-kvm`` again when it starts: pve-manager
    PVE/Service/pvestatd.pm ``update_supported_cpuflags``); a pve-qemu-kvm update changes the
    machine versions (``qemu_version``). ``without_flags``: drop these names from both views;
    ``with_flags``: add them (TSX switched back on, ``tsx=on``). Raises KeyError for an unknown
    node or field."""
    unknown = set(changes) - set(NODE_FIELDS) - {"without_flags", "with_flags"}
    if unknown:
        raise KeyError(
            f"no node field {', '.join(sorted(unknown))} (use {', '.join(NODE_FIELDS)}, without_flags)"
        )
    with state.lock:
        node = state.node(name)
        if node is None:
            raise KeyError(f"no node {name}")
        drop = set(changes.get("without_flags") or ())
        add = [str(f) for f in changes.get("with_flags") or ()]
        if drop or add:
            cpu = dict(node_cpu(node))
            flags = [f for f in cpu.get("flags") or () if f not in drop]
            cpu["flags"] = flags + [f for f in add if f not in flags]
            node["cpu"] = cpu
            recorded = recorded_qemu_flags(node)
            if recorded is not None:
                kept = [f for f in recorded if f not in drop]
                node["qemu_flags"] = kept + [f for f in add if f not in kept]
        for field in NODE_FIELDS:
            if field in changes:
                node[field] = changes[field]
        state._qemu_flags_cache.pop(name, None)


# --- the token's privileges and the Proxmox versions ---------------------------------------------


def pve_version(scenario: dict) -> str:
    return str(scenario.get("pve_version", "9.2.1"))


def privileges(state: ClusterState) -> set[str]:
    return set(state.token.get("privileges", ["VM.Audit", "Sys.Audit", "VM.Migrate"]))


def require(state: ClusterState, privilege: str, path: str) -> None:
    if privilege not in privileges(state):
        raise ApiError(403, f"Permission check failed ({path}, {privilege})")


def version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def node_pve_version(scenario: dict, node: dict) -> str:
    """A scenario node may carry its own ``pve_version`` (a cluster in a rolling upgrade)."""
    return str(node.get("pve_version") or pve_version(scenario))
