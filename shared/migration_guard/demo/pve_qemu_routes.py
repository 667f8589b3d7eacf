"""The test server's routes below /nodes/NODE/qemu/VMID: the VM's status, its config (with and
without pending changes) and Proxmox's migration precondition check. Each answer is shaped after
the qemu-server source named next to it. Imports nothing of the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from migration_guard.demo.pve_scenario import ApiError, ClusterState, require


def vm_status(node: dict, vm: dict, full: bool, qmp_busy: bool = False) -> dict[str, Any]:
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


def _vm_config(state: ClusterState, node: dict, vm: dict, query: dict[str, str]) -> Any:
    # qemu-server PVE/API2/Qemu.pm ``vm_config``: the pending changes applied (pending deletes
    # removed) unless ``current=1``
    require(state, "VM.Audit", f"/vms/{int(vm['vmid'])}")
    config = _current_config(vm)
    if query.get("current") not in ("1", "true"):
        for key, value in (vm.get("pending") or {}).items():
            if value is None:  # a pending delete
                config.pop(key, None)
            else:
                config[key] = value
    return config


def _vm_pending(state: ClusterState, node: dict, vm: dict, query: dict[str, str]) -> Any:
    # qemu-server PVE/API2/Qemu.pm ``vm_pending`` -> pve-guest-common
    # PVE::GuestHelpers::config_with_pending_array: one row per option, ``value`` the current
    # value, ``pending`` the pending one, ``delete`` 1 for a pending delete
    require(state, "VM.Audit", f"/vms/{int(vm['vmid'])}")
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


def _vm_status_current(state: ClusterState, node: dict, vm: dict, query: dict[str, str]) -> Any:
    # qemu-server PVE/API2/Qemu.pm ``vm_status`` (status/current): ``vmstatus`` with the QMP fields
    vmid = int(vm["vmid"])
    require(state, "VM.Audit", f"/vms/{vmid}")
    return vm_status(node, vm, True, str(vmid) in state.faults.qmp_busy)


def _vm_precondition(state: ClusterState, node: dict, vm: dict, query: dict[str, str]) -> Any:
    # qemu-server PVE/API2/Qemu.pm ``migrate_vm_precondition``: VM.Migrate, lock check, blockers per node
    require(state, "VM.Migrate", f"/vms/{int(vm['vmid'])}")
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
        raise ApiError(400, "Parameter verification failed.", {"target": f"no such cluster node '{target}'"})
    return answer


#: the paths below /nodes/NODE/qemu/VMID this server answers, each by its handler
_ROUTES: dict[tuple[str, ...], Callable[[ClusterState, dict, dict, dict[str, str]], Any]] = {
    ("config",): _vm_config,
    ("pending",): _vm_pending,
    ("status", "current"): _vm_status_current,
    ("migrate",): _vm_precondition,
}


def vm_route(state: ClusterState, node: dict, vm: dict, rest: list[str], query: dict[str, str]) -> Any:
    """The answer's ``data`` for a GET below /nodes/NODE/qemu/VMID. Raises ApiError."""
    handler = _ROUTES.get(tuple(rest))
    if handler is None:
        path = f"/nodes/{node['name']}/qemu/{int(vm['vmid'])}/{'/'.join(rest)}"
        raise ApiError(501, f"Method 'GET {path}' not implemented")
    return handler(state, node, vm, query)
