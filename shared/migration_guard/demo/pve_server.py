"""A Proxmox-VE-shaped HTTPS server that serves a cluster from a JSON scenario.

Used by the tests (proxmoxer speaks real HTTPS to it) and by ``migration-guard serve --demo``.
It answers the read endpoints the guard uses, shaped like Proxmox VE 9.x answers them
(``{"data": ...}``, Proxmox's status codes), checks the ``PVEAPIToken`` header, and has
test controls under ``/_test/`` (request counts, fault injection, VM edits).

Run as a process: ``python -m migration_guard.demo.pve_server --scenario demo|FILE [--port N]``
prints ``READY https://127.0.0.1:PORT ca=PATH`` and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import copy
import functools
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

from migration_guard.errors import ConfigError

API_PREFIX = "/api2/json"

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
        raise ConfigError(f"scenario names cpu_ref {ref!r}, but shared/migration_guard/data/cpus/{ref}.json "
                          f"does not exist")
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


#: QEMU's aliases among recorded property names (qemu-server PVE/QemuServer/CPUFlags.pm
#: ``$qemu_cpu_flag_alias_map`` normalises the same kind of spelling drift)
_QEMU_ALIASES = {"i64": "lm", "xd": "nx", "pclmuldq": "pclmulqdq", "sse3": "pni", "ffxsr": "fxsr-opt"}
#: boolean properties of QEMU's x86 CPU object that are not CPUID flags (absent from pve-qemu-kvm's
#: recognized-CPUID-flags list, so pvestatd's cpuflags-kvm entry never carries them)
_NOT_CPUID_FLAGS = frozenset(
    {
        "check", "enforce", "kvm", "l3-cache", "legacy-cache", "full-cpuid-auto-level",
        "fill-mtrr-mask", "cpuid-0xb", "vmware-cpuid-freq", "host-phys-bits", "tcg-cpuid",
        "x-hv-synic-kvm-only", "lmce", "pmu", "migratable",
    }
)
#: QEMU's experimental knobs (``x-``) and Hyper-V enlightenments (``hv-``, set on when the
#: expansion is asked with ``hv-passthrough``): properties of the CPU object, not in QEMU's
#: "Recognized CPUID flags" list that pve-qemu-kvm ships
_NOT_CPUID_PREFIXES = ("x-", "hv-")


def kvm_expansion(ref: str) -> list[str]:
    """A real host's recorded QMP ``query-cpu-model-expansion`` of ``host``
    (``shared/migration_guard/data/kvm_expansions/<ref>.json``, each file naming its source), in the form
    pvestatd
    stores in the ``cpuflags-kvm`` key-value entry (pve-manager PVE/Service/pvestatd.pm ->
    qemu-server ``query_supported_cpu_flags``): ``_`` and ``.`` spelled ``-``, aliases folded,
    only CPUID flags."""
    entry = resources.files("migration_guard").joinpath("data", "kvm_expansions", f"{ref}.json")
    if not entry.is_file():
        raise ConfigError(
            f"scenario names kvm_ref {ref!r}, but shared/migration_guard/data/kvm_expansions/{ref}.json does "
            f"not exist"
        )
    props = json.loads(entry.read_text(encoding="utf-8"))["true_props"]
    flags = {_QEMU_ALIASES.get(p, p) for p in (str(p).replace("_", "-").replace(".", "-") for p in props)}
    return sorted(f for f in flags if f not in _NOT_CPUID_FLAGS and not f.startswith(_NOT_CPUID_PREFIXES))


@functools.cache
def recognised_flags() -> tuple[str, ...]:
    """The flags this server lists as QEMU-recognised (pve-qemu-kvm ships the real list as
    /usr/share/kvm/recognized-CPUID-flags-x86_64, read by qemu-server PVE/QemuServer/CPUFlags.pm
    ``query_understood_cpu_flags``): every flag any recording names."""
    folder = resources.files("migration_guard").joinpath("data", "kvm_expansions")
    names: set[str] = set()
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            names.update(kvm_expansion(entry.name[: -len(".json")]))
    return tuple(sorted(names))


def _qemu_flags(node: dict) -> list[str] | None:
    """What the node's KVM offers in QEMU names, as pvestatd stores it in the node's
    ``cpuflags-kvm`` key-value entry: given by the scenario (``qemu_flags``), or a real host's
    recorded expansion (``kvm_ref``). None for a node with neither: nothing recorded, so this
    server has no KVM report for it, as when pvestatd's flag detection failed and it broadcast an
    empty entry (pve-manager PVE/Service/pvestatd.pm ``update_supported_cpuflags``); such a node is
    in no flag's ``supported-on`` (qemu-server PVE/QemuServer/CPUFlags.pm
    ``query_available_cpu_flags`` walks only the nodes with flags in the entry)."""
    if "qemu_flags" in node:
        return sorted(node["qemu_flags"])
    if "kvm_ref" in node:
        return kvm_expansion(node["kvm_ref"])
    return None


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
    #: nodes powered off but still listed online: requests proxied to them hang (see _node_route)
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
        self.auth_failure_delay_s = float(
            scenario.get("auth_failure_delay_s", DEFAULT_AUTH_FAILURE_DELAY_S)
        )

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
    # pve-manager PVE/API2.pm ``version``: version, release, repoid
    if parts == ["version"]:
        version = _pve_version(sc)
        return {"version": version, "release": ".".join(version.split(".")[:2]), "repoid": "0123abcd"}
    # pve-manager PVE/API2/Nodes.pm ``index`` (Nodeinfo): one row per node, status online/offline
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
    # pve-manager PVE/API2/Cluster.pm ``get_status``: cluster + node rows
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
    # pve-manager PVE/API2/Cluster.pm ``resources`` (type=vm): one row per guest
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
        # pve-manager PVE/API2/Cluster/Qemu/CPUFlags.pm (since 9.1.15; older releases: 501),
        # answered by qemu-server PVE/QemuServer/CPUFlags.pm ``query_available_cpu_flags``
        if not sc.get("cpu_flags_endpoint", True) or _version_tuple(_pve_version(sc)) < (9, 1, 15):
            raise ApiError(501, "Method 'GET /cluster/qemu/cpu-flags' not implemented")
        _require(state, "Sys.Audit", "/nodes")
        return _cpu_flags(state)
    if len(parts) >= 2 and parts[0] == "nodes":
        return _node_route(state, parts[1], parts[2:], query)
    raise ApiError(501, f"Method 'GET /{'/'.join(parts)}' not implemented")


#: the flags a VM's own ``flags=`` may set, with a description (qemu-server
#: PVE/QemuServer/CPUFlags.pm; the descriptions here are short paraphrases)
VM_SPECIFIC_FLAGS = {
    "nested-virt": "Nested virtualization: svm on AMD, vmx on Intel hosts.",
    "md-clear": "Tells the guest whether MDS is mitigated.",
    "pcid": "Meltdown fix cost reduction on Westmere, Sandy and Ivy Bridge Intel CPUs.",
    "spec-ctrl": "Improved Spectre mitigation with Intel CPUs.",
    "ssbd": "Speculative Store Bypass protection for Intel models.",
    "ibpb": "Improved Spectre mitigation with AMD CPUs.",
    "virt-ssbd": "Basis for Speculative Store Bypass protection for AMD models.",
    "amd-ssbd": "Improved Spectre mitigation with AMD CPUs; use with virt-ssbd.",
    "amd-no-ssb": "Tells the guest it needs no Speculative Store Bypass mitigation.",
    "pdpe1gb": "1 GiB pages for the guest, where the host has them.",
    "hv-tlbflush": "Faster TLB flushes for Windows guests (needs hv-vpindex).",
    "hv-evmcs": "Enlightened VMCS for nested Windows/Hyper-V guests on Intel.",
    "aes": "AES instructions for hardware acceleration.",
}


def _cpu_flags(state: ClusterState) -> list[dict[str, Any]]:
    """What qemu-server's ``query_available_cpu_flags('kvm', 0, 'x86_64')`` answers: every flag
    QEMU recognises (pve-qemu-kvm's /usr/share/kvm/recognized-CPUID-flags-x86_64, here every flag
    the recordings in shared/migration_guard/data/kvm_expansions name, plus the VM-specific ones: the list
    does not
    depend on which nodes have a report), each with ``supported-on``
    the nodes whose ``cpuflags-kvm`` key-value entry (written by pvestatd from QMP
    ``query-cpu-model-expansion`` of ``host``) names it, sorted: ``nested-virt`` first (on the
    nodes with svm or vmx), then flags some node offers, then the others (``supported-on`` []),
    each group by name. ``description`` only where qemu-server has one."""
    offered: dict[str, set[str]] = {name: set() for name in VM_SPECIFIC_FLAGS}
    for name in recognised_flags():
        offered.setdefault(name, set())
    for n in state.scenario.get("nodes", []):
        if n.get("online") is False:
            continue  # a node that is down: its pvestatd wrote no entry (kept from before otherwise)
        for flag in state.qemu_flags(n) or ():  # no recording: in no supported-on
            offered.setdefault(flag, set()).add(n["name"])
            if flag in ("svm", "vmx"):
                offered["nested-virt"].add(n["name"])
    for raw in ("svm", "vmx"):
        offered.setdefault(raw, set())
    rows = []
    for name, nodes in offered.items():
        row: dict[str, Any] = {"name": name, "supported-on": sorted(nodes)}
        if name in VM_SPECIFIC_FLAGS:
            row["description"] = VM_SPECIFIC_FLAGS[name]
        elif name in ("svm", "vmx"):
            row["description"] = "Raw nested-virtualization flag: prefer nested-virt."
        rows.append(row)
    nested = next(r for r in rows if r["name"] == "nested-virt")
    rest = sorted((r for r in rows if r is not nested), key=lambda r: (not r["supported-on"], r["name"]))
    return [nested, *rest]


def _node_route(state: ClusterState, name: str, rest: list[str], query: dict[str, str]) -> Any:
    node = state.node(name)
    if node is None:  # pve-common PVE/Tools.pm / pve-http-server: the proxy cannot resolve the node
        raise ApiError(500, f"hostname lookup '{name}' failed - failed to get address info for: {name}")
    if not state.online(node):  # pveproxy: a node corosync knows to be offline, answered at once
        raise ApiError(595, f"no route to host (node {name} is offline)")
    # pve-manager PVE/API2/Nodes.pm ``status`` (proxied to the node): cpuinfo, pveversion, kversion
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
        version = _node_pve_version(state.scenario, node)
        return {
            "cpuinfo": cpuinfo,
            "pveversion": f"pve-manager/{version}/0123abcd",
            "kversion": node.get("kversion", "Linux 6.14.8-2-pve #1 SMP PREEMPT_DYNAMIC PMX 6.14.8-2"),
            "uptime": 123456,
            "cpu": 0.05,
            "memory": {"total": 137438953472, "used": 34359738368, "free": 103079215104},
        }
    if rest == ["capabilities", "qemu", "machines"]:
        # qemu-server PVE/API2/Qemu/Machine.pm ``types``: pve-qemu-kvm's machine versions
        # (/usr/share/kvm/machine-versions-x86_64.json) merged with a "+pveN" entry per revision
        # qemu-server knows ($PVE_MACHINE_VERSION in PVE/QemuServer/Machine.pm), newest first.
        # Its permission is ``user => 'all'``: no privilege check.
        return _machine_types(node)
    # qemu-server PVE/API2/Qemu/CPU.pm ``index``: the node's CPU models (not modelled here: [])
    if rest == ["capabilities", "qemu", "cpu"]:
        return _node_cpu_models(state, node)
    if rest == ["version"]:
        return _node_version(state, node)
    if rest == ["qemu"]:  # qemu-server's vmlist: VMs the token may audit; ``full`` adds the QMP fields
        full = query.get("full") in ("1", "true")
        return [
            _vm_status(node, vm, full, str(vm["vmid"]) in state.faults.qmp_busy)
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


# --- each node's own Proxmox release: its version and the CPU types its qemu-server accepts --------
# A scenario node may carry its own ``pve_version`` (a cluster in a rolling upgrade); the answers of
# a release are scenario data under ``pve_releases["X.Y"]`` (shaped after that release's own answers).


def _node_pve_version(scenario: dict, node: dict) -> str:
    return str(node.get("pve_version") or _pve_version(scenario))


def _node_release(state: ClusterState, node: dict) -> dict:
    version = _node_pve_version(state.scenario, node)
    release = ".".join(str(p) for p in _version_tuple(version.replace("-", "."))[:2])
    return dict((state.scenario.get("pve_releases") or {}).get(release) or {})


def _node_version(state: ClusterState, node: dict) -> dict:
    """pve-manager ``PVE/API2/Nodes.pm`` ``version`` (``PVE::pvecfg::version_info``): the node's
    pve-manager version, its release (X.Y) and the git commit it was built from."""
    version = _node_pve_version(state.scenario, node)
    parts = _version_tuple(version.replace("-", "."))
    return {
        "version": version,
        "release": ".".join(str(p) for p in parts[:2]),
        "repoid": str(node.get("repoid") or "0123abcd"),
    }


def _node_cpu_models(state: ClusterState, node: dict) -> list[dict]:
    """qemu-server ``PVE/API2/Qemu/CPU.pm`` ``index`` (since qemu-server 6.2-1), which returns
    ``PVE/QemuServer/CPUConfig.pm`` ``get_cpu_models(1)``: every built-in model with its vendor
    (``custom: 0``), Proxmox's own x86-64-vN types (with ``abstract: 1`` from qemu-server 9.1.13 on),
    then each custom model of /etc/pve/virtual-guest/cpu-models.conf as ``custom-<name>`` with the
    vendor of its reported model, kept only when that reported model is a built-in one. Custom
    models are listed to a token with Sys.Audit on /nodes (or Mapping.* on /mapping/cpu/<name>).
    A release before the endpoint answers 501 as pve-http-server does for an unknown method."""
    release = _node_release(state, node)
    if "cpu_models" not in release:  # a scenario that does not give its release's list: none
        return []
    models = release.get("cpu_models")
    if models is None:
        raise ApiError(501, f"Method 'GET /nodes/{node['name']}/capabilities/qemu/cpu' not implemented")
    abstract = bool(release.get("abstract_flag"))
    vendors = {str(m["name"]): str(m.get("vendor") or "default") for m in models}
    answer: list[dict] = []
    for m in models:
        row: dict[str, Any] = {"name": str(m["name"]), "custom": 0, "vendor": vendors[str(m["name"])]}
        if m.get("abstract"):
            if abstract:
                row["abstract"] = 1
            row["vendor"] = vendors.get("qemu64", "default")
        answer.append(row)
    if "Sys.Audit" in _privileges(state):
        for custom in state.scenario.get("custom_cpu_models") or ():
            reported = str(custom.get("reported-model") or "kvm64")
            if reported in vendors:
                answer.append({"name": f"custom-{custom['name']}", "custom": 1, "vendor": vendors[reported]})
    return answer


#: QEMU machine versions (major.minor) QEMU keeps: pve-qemu-kvm lists every one up to its own
QEMU_MACHINE_VERSIONS = tuple(
    f"{major}.{minor}"
    for major, minors in ((2, 13), (3, 2), (4, 3), (5, 3), (6, 3), (7, 3), (8, 3), (9, 3), (10, 3), (11, 1))
    for minor in range(4 if major == 2 else 0, minors)
)

#: qemu-server 9.2.6 ``$PVE_MACHINE_VERSION`` (PVE/QemuServer/Machine.pm): the "+pveN" revisions
#: it knows per machine version (a node's scenario entry ``machine_revisions`` overrides it, e.g.
#: {"9.2": 0} for a qemu-server older than the +pve1 revision of 9.2)
PVE_MACHINE_REVISIONS = {"4.1": 2, "9.2": 1, "10.0": 1, "11.0": 2}


def _machine_types(node: dict) -> list[dict[str, str]]:
    if node.get("machines") is not None:  # given verbatim by the scenario
        ids = [str(m) for m in node["machines"]]
    else:
        qemu = _version_tuple(str(node.get("qemu_version", "9.2.0")))[:2]
        revisions = {**PVE_MACHINE_REVISIONS, **node.get("machine_revisions", {})}
        ids = []
        for version in QEMU_MACHINE_VERSIONS:
            if _version_tuple(version) > qemu:
                continue
            for kind in ("pc-q35", "pc-i440fx"):
                ids.append(f"{kind}-{version}")
                ids += [f"{kind}-{version}+pve{n}" for n in range(1, int(revisions.get(version, 0)) + 1)]

    def order(machine_id: str) -> tuple:
        base, _, rev = machine_id.partition("+pve")
        return (_version_tuple(base.rsplit("-", 1)[-1]), int(rev or 0), base)

    return [
        {
            "id": m,
            "type": "q35" if "q35" in m else "i440fx",
            "version": m.rsplit("-", 1)[-1],
        }
        for m in sorted(ids, key=order, reverse=True)
    ]


def _vm_status(node: dict, vm: dict, full: bool, qmp_busy: bool = False) -> dict[str, Any]:
    """One VM's status as qemu-server's ``vmstatus`` gives it (``full``: with the QMP fields).
    qemu-server PVE/QemuServer.pm ``vmstatus``: ``running-machine`` and ``running-qemu`` come
    from QMP (``query-machines`` / ``query-version``) asked with a short timeout; while QMP is
    busy (a backup, a migration, a hung guest agent call) the fields are simply missing."""
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
    if status == "running" and full and not (qmp_busy or vm.get("qmp_busy")):
        answer["qmpstatus"] = status
        answer["running-machine"] = vm.get("running_machine", "pc-q35-9.2+pve0")
        answer["running-qemu"] = vm.get("running_qemu", node.get("qemu_version", "9.2.0"))
    return answer


def _current_config(vm: dict) -> dict[str, Any]:
    """The VM's config file without its [PENDING] section (qemu-server's parse_vm_config)."""
    config: dict[str, Any] = {"name": vm.get("name", f"VM {vm['vmid']}"), "digest": "0" * 40}
    config.update(vm.get("config", {}))
    if vm.get("tags"):
        config.setdefault("tags", vm["tags"])
    return config


def _vm_route(state: ClusterState, node: dict, vm: dict, rest: list[str], query: dict[str, str]) -> Any:
    vmid = int(vm["vmid"])
    if rest == ["config"]:
        # qemu-server PVE/API2/Qemu.pm ``vm_config``: the pending changes applied (pending deletes
        # removed) unless ``current=1``
        _require(state, "VM.Audit", f"/vms/{vmid}")
        config = _current_config(vm)
        if query.get("current") not in ("1", "true"):
            for key, value in (vm.get("pending") or {}).items():
                if value is None:  # a pending delete
                    config.pop(key, None)
                else:
                    config[key] = value
        return config
    if rest == ["pending"]:
        # qemu-server PVE/API2/Qemu.pm ``vm_pending`` -> pve-guest-common
        # PVE::GuestHelpers::config_with_pending_array: one row per option, ``value`` the current
        # value, ``pending`` the pending one, ``delete`` 1 for a pending delete
        _require(state, "VM.Audit", f"/vms/{vmid}")
        current = _current_config(vm)
        pending = vm.get("pending") or {}
        rows: list[dict[str, Any]] = []
        for key, value in current.items():
            row: dict[str, Any] = {"key": key, "value": value}
            if key in pending:
                if pending[key] is None:
                    row["delete"] = 1
                else:
                    row["pending"] = pending[key]
            rows.append(row)
        for key, value in pending.items():
            if key not in current and value is not None:
                rows.append({"key": key, "pending": value})
        return rows
    if rest == ["status", "current"]:
        _require(state, "VM.Audit", f"/vms/{vmid}")
        return _vm_status(node, vm, True, str(vmid) in state.faults.qmp_busy)
    # qemu-server PVE/API2/Qemu.pm ``migrate_vm_precondition``: VM.Migrate, lock check, blockers per node
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
        prog="python -m migration_guard.demo.pve_server", description="Serve a Proxmox-shaped cluster from a "
                                                                      "scenario."
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
