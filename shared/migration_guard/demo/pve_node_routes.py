"""The test server's routes below /nodes/NODE: the node's status, its version, its CPU models,
its machine types and its VM list; a path below /nodes/NODE/qemu/VMID goes to the VM routes. Each
answer is shaped after the Proxmox source named next to it. Imports nothing of the engine."""

from __future__ import annotations

from typing import Any

from migration_guard.demo.pve_qemu_routes import vm_route, vm_status
from migration_guard.demo.pve_scenario import (
    ApiError,
    ClusterState,
    node_cpu,
    node_pve_version,
    privileges,
    require,
    version_tuple,
)


def _node_status(state: ClusterState, node: dict) -> dict[str, Any]:
    # pve-manager PVE/API2/Nodes.pm ``status`` (proxied to the node): cpuinfo, pveversion, kversion
    name = node["name"]
    require(state, "Sys.Audit", f"/nodes/{name}")
    cpu = node_cpu(node)
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
    version = node_pve_version(state.scenario, node)
    return {
        "cpuinfo": cpuinfo,
        "pveversion": f"pve-manager/{version}/0123abcd",
        "kversion": node.get("kversion", "Linux 6.14.8-2-pve #1 SMP PREEMPT_DYNAMIC PMX 6.14.8-2"),
        "uptime": 123456,
        "cpu": 0.05,
        "memory": {"total": 137438953472, "used": 34359738368, "free": 103079215104},
    }


def node_route(state: ClusterState, name: str, rest: list[str], query: dict[str, str]) -> Any:
    node = state.node(name)
    if node is None:  # pve-common PVE/Tools.pm / pve-http-server: the proxy cannot resolve the node
        raise ApiError(500, f"hostname lookup '{name}' failed - failed to get address info for: {name}")
    if not state.online(node):  # pveproxy: a node corosync knows to be offline, answered at once
        raise ApiError(595, f"no route to host (node {name} is offline)")
    if rest == ["status"]:
        return _node_status(state, node)
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
    if len(rest) == 3 and rest[0] == "storage" and rest[2] == "content":
        return _storage_content(state, node, rest[1], query)
    if rest == ["qemu"]:  # qemu-server's vmlist: VMs the token may audit; ``full`` adds the QMP fields
        full = query.get("full") in ("1", "true")
        return [
            vm_status(node, vm, full, str(vm["vmid"]) in state.faults.qmp_busy)
            for vm in state.scenario.get("vms", [])
            if vm["node"] == name and "VM.Audit" in privileges(state)
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
        return vm_route(state, node, vm, rest[2:], query)
    raise ApiError(501, f"Method 'GET /nodes/{name}/{'/'.join(rest)}' not implemented")


def _storage_content(state: ClusterState, node: dict, storage: str, query: dict[str, str]) -> list[dict]:
    """pve-storage PVE/API2/Storage/Content.pm ``index``: the volumes of one storage on one node
    (``content=snippets``: its snippets/ files), needing Datastore.Audit (or AllocateSpace) on
    /storage/{storage}. A scenario node's ``snippets`` maps storage -> file names; a storage it does
    not name is not configured there (PVE::Storage::storage_config dies: 500)."""
    require(state, "Datastore.Audit", f"/storage/{storage}")
    stores = node.get("snippets", {})
    if storage not in stores:
        raise ApiError(500, f"storage '{storage}' does not exist")
    if query.get("content") not in (None, "snippets"):
        return []
    return [
        {"volid": f"{storage}:snippets/{name}", "content": "snippets", "format": "snippet", "size": 4096}
        for name in sorted(stores[storage])
    ]


# --- each node's own Proxmox release: its version and the CPU types its qemu-server accepts --------
# A scenario node may carry its own ``pve_version`` (a cluster in a rolling upgrade); the answers of
# a release are scenario data under ``pve_releases["X.Y"]`` (shaped after that release's own answers).


def _node_release(state: ClusterState, node: dict) -> dict:
    version = node_pve_version(state.scenario, node)
    release = ".".join(str(p) for p in version_tuple(version.replace("-", "."))[:2])
    return dict((state.scenario.get("pve_releases") or {}).get(release) or {})


def _node_version(state: ClusterState, node: dict) -> dict:
    """pve-manager ``PVE/API2/Nodes.pm`` ``version`` (``PVE::pvecfg::version_info``): the node's
    pve-manager version, its release (X.Y) and the git commit it was built from."""
    version = node_pve_version(state.scenario, node)
    parts = version_tuple(version.replace("-", "."))
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
    if "Sys.Audit" in privileges(state):
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
        qemu = version_tuple(str(node.get("qemu_version", "9.2.0")))[:2]
        revisions = {**PVE_MACHINE_REVISIONS, **node.get("machine_revisions", {})}
        ids = []
        for version in QEMU_MACHINE_VERSIONS:
            if version_tuple(version) > qemu:
                continue
            for kind in ("pc-q35", "pc-i440fx"):
                ids.append(f"{kind}-{version}")
                ids += [f"{kind}-{version}+pve{n}" for n in range(1, int(revisions.get(version, 0)) + 1)]

    def order(machine_id: str) -> tuple:
        base, _, rev = machine_id.partition("+pve")
        return (version_tuple(base.rsplit("-", 1)[-1]), int(rev or 0), base)

    return [
        {
            "id": m,
            "type": "q35" if "q35" in m else "i440fx",
            "version": m.rsplit("-", 1)[-1],
        }
        for m in sorted(ids, key=order, reverse=True)
    ]
