"""A VM's facts (``VmFacts``) from its config and its status as Proxmox answers them."""

from __future__ import annotations

import time
from typing import Any

from migration_guard.engine.facts import VmFacts, VmSummary


def vm_facts_from(
    cluster: str,
    node: str,
    vmid: int,
    config: dict,
    status: dict,
    summary: VmSummary | None = None,
) -> VmFacts:
    """A VM's facts from its config and its status (a ``status/current`` answer or its row of
    ``GET /nodes/{node}/qemu?full=1``: the same fields)."""
    running = status.get("status") == "running"
    found = config.get("pending")
    pending: dict = found if isinstance(found, dict) else {}
    pending_cpu = str(pending["cpu"]) if "cpu" in pending else None
    if pending_cpu == str(config.get("cpu") or ""):
        pending_cpu = None
    return VmFacts(
        cluster=cluster,
        vmid=vmid,
        node=node,
        status=str(status.get("status") or (summary.status if summary else "unknown")),
        name=str(config.get("name") or (summary.name if summary else "")),
        tags=tags_of(config.get("tags")) or (summary.tags if summary else ()),
        cpu=str(config.get("cpu") or ""),
        pending_cpu=pending_cpu,
        machine=str(config.get("machine") or ""),
        hookscript=str(config.get("hookscript") or ""),
        lock=str(config.get("lock") or ""),
        running_machine=str(status.get("running-machine") or "") if running else "",
        running_qemu=str(status.get("running-qemu") or "") if running else "",
        smbios_uuid=_smbios_uuid(config.get("smbios1", "")),
        vmgenid=str(config.get("vmgenid") or ""),
        fetched_at=time.time(),
    )


def tags_of(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    text = str(value).replace(",", ";").replace(" ", ";")
    return tuple(t for t in text.split(";") if t)


def _smbios_uuid(value: str) -> str:
    for part in str(value or "").split(","):
        key, _, val = part.partition("=")
        if key.strip() == "uuid":
            return val.strip().lower()
    return ""
