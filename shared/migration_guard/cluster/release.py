"""A node's Proxmox and QEMU releases as the reader reads them: the pve-manager version and the
``cpu:`` types its Proxmox accepts (``node_release``), the QEMU version from its machine types."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from migration_guard.cluster.pair import both
from migration_guard.errors import ProxmoxNotFound, ProxmoxNotImplemented, ProxmoxPermissionError

#: the reader's one way to call Proxmox: (kind, what, the call) -> the answer's data
Call = Callable[[str, str, Callable[[], Any]], Any]


def node_release(call: Call, api: Any, name: str) -> tuple[str, tuple[str, ...], str]:
    """(the node's pve-manager version from ``/nodes/{node}/version``, the ``cpu:`` types its
    Proxmox accepts from ``/nodes/{node}/capabilities/qemu/cpu`` (qemu-server
    ``PVE/API2/Qemu/CPU.pm``: built-in, Proxmox's own and custom models), "node" as their
    source). A release without the list (501/404) or a token that may not read it (403) gives
    ``()`` and "": the guard then uses the release's data
    (shared/migration_guard/engine/pve_versions.py)."""

    def version() -> str:
        try:
            row = call(
                "node-version",
                f"the version of node {name}",
                lambda: api.nodes(name).version.get(),
            )
        except (ProxmoxNotImplemented, ProxmoxNotFound, ProxmoxPermissionError):
            return ""
        return str((row or {}).get("version") or "")

    def cpu_types() -> tuple[tuple[str, ...], str]:
        try:
            rows = call(
                "node-cpu-types",
                f"the CPU types of node {name}",
                lambda: api.nodes(name).capabilities.qemu.cpu.get(),
            )
        except (ProxmoxNotImplemented, ProxmoxNotFound, ProxmoxPermissionError):
            return (), ""
        names = tuple(sorted({str(r["name"]) for r in rows or () if isinstance(r, dict) and r.get("name")}))
        return (names, "node") if names else ((), "")

    pve, (types, source) = both(version, cpu_types)
    return pve, types, source


def qemu_version_of(machines: list[dict]) -> str:
    """The newest machine version the node's QEMU offers, as its QEMU version (e.g. "9.2")."""
    best: tuple[int, ...] = ()
    for entry in machines:
        version = str(entry.get("version") or "")
        try:
            parsed = tuple(int(p) for p in version.split("+")[0].split("."))
        except ValueError:
            continue
        best = max(best, parsed)
    return ".".join(str(p) for p in best)
