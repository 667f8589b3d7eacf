"""The test server's cluster-wide routes (below /api2/json): version, nodes, cluster status,
resources and QEMU's cpu-flags; a path below /nodes/NODE goes to the node routes. Each answer is
shaped after the Proxmox source named next to it. Imports nothing of the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from migration_guard.demo.pve_custom_models import create_model, list_models
from migration_guard.demo.pve_ha_routes import ha_groups, ha_resources, ha_rules
from migration_guard.demo.pve_kvm import recognised_flags
from migration_guard.demo.pve_node_routes import node_route
from migration_guard.demo.pve_scenario import ApiError, ClusterState, pve_version, require, version_tuple


def _version(state: ClusterState, query: dict[str, str]) -> Any:
    # pve-manager PVE/API2.pm ``version``: version, release, repoid
    version = pve_version(state.scenario)
    return {"version": version, "release": ".".join(version.split(".")[:2]), "repoid": "0123abcd"}


def _nodes(state: ClusterState, query: dict[str, str]) -> Any:
    # pve-manager PVE/API2/Nodes.pm ``index`` (Nodeinfo): one row per node, status online/offline
    require(state, "Sys.Audit", "/nodes")
    return [
        {
            "node": n["name"],
            "status": "online" if state.online(n) else "offline",
            "type": "node",
            "id": f"node/{n['name']}",
            "maxcpu": n.get("cpus", 16),
            "level": "",
        }
        for n in state.scenario.get("nodes", [])
    ]


def _cluster_status(state: ClusterState, query: dict[str, str]) -> Any:
    # pve-manager PVE/API2/Cluster.pm ``get_status``: cluster + node rows
    sc = state.scenario
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


def _cluster_resources(state: ClusterState, query: dict[str, str]) -> Any:
    # pve-manager PVE/API2/Cluster.pm ``resources`` (type=vm): one row per guest
    kind = query.get("type")
    if kind not in (None, "vm"):
        return []
    rows = []
    for vm in state.scenario.get("vms", []):
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


def _cluster_cpu_flags(state: ClusterState, query: dict[str, str]) -> Any:
    # pve-manager PVE/API2/Cluster/Qemu/CPUFlags.pm (since 9.1.15; older releases: 501),
    # answered by qemu-server PVE/QemuServer/CPUFlags.pm ``query_available_cpu_flags``
    sc = state.scenario
    if not sc.get("cpu_flags_endpoint", True) or version_tuple(pve_version(sc)) < (9, 1, 15):
        raise ApiError(501, "Method 'GET /cluster/qemu/cpu-flags' not implemented")
    require(state, "Sys.Audit", "/nodes")
    return _cpu_flags(state)


#: the cluster-wide paths this server answers, each by its handler
_ROUTES: dict[tuple[str, ...], Callable[[ClusterState, dict[str, str]], Any]] = {
    ("version",): _version,
    ("nodes",): _nodes,
    ("cluster", "status"): _cluster_status,
    ("cluster", "resources"): _cluster_resources,
    ("cluster", "qemu", "cpu-flags"): _cluster_cpu_flags,
    ("cluster", "qemu", "custom-cpu-models"): list_models,
    ("cluster", "ha", "resources"): ha_resources,
    ("cluster", "ha", "rules"): ha_rules,
    ("cluster", "ha", "groups"): ha_groups,
}
#: the paths this server answers a POST on (the body's form fields in, ``data`` out)
_POSTS: dict[tuple[str, ...], Callable[[ClusterState, dict[str, str]], Any]] = {
    ("cluster", "qemu", "custom-cpu-models"): create_model,
}


def post_route(state: ClusterState, path: str, form: dict[str, str]) -> Any:
    """The answer's ``data`` for a POST of ``path`` with ``form``. Raises ApiError."""
    parts = tuple(unquote(p) for p in path.strip("/").split("/") if p)
    handler = _POSTS.get(parts)
    if handler is None:
        raise ApiError(501, f"Method 'POST /{'/'.join(parts)}' not implemented")
    return handler(state, form)


def route(state: ClusterState, path: str, query: dict[str, str]) -> Any:
    """The answer's ``data`` for a GET of ``path`` (below /api2/json). Raises ApiError."""
    parts = [unquote(p) for p in path.strip("/").split("/") if p]
    handler = _ROUTES.get(tuple(parts))
    if handler is not None:
        return handler(state, query)
    if len(parts) >= 2 and parts[0] == "nodes":
        return node_route(state, parts[1], parts[2:], query)
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
