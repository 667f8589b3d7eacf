"""What the parser cannot know, resolved through the service's answers: the VM ID of a VM name
(the matrix lists every VM with its name), and a node named in another case (``PVE-ATOM1``)."""

from __future__ import annotations

import difflib
from typing import Any

from migration_guard.errors import UnknownNodeError, UnknownVmError
from migration_guard_bot.parser import VmRef


def vmid_of(vm: VmRef, service: Any) -> int:
    """The VM ID of ``vm``: an ID as is, a name looked up (case-insensitive) among the service's
    VMs. Raises UnknownVmError naming the closest names, or the IDs when two VMs share the name."""
    if isinstance(vm, int):
        return vm
    # the compact form: names and nodes without every verdict spelled out (35 MB -> 2 MB at 10,000 VMs)
    listed = service.matrix(compact=True).get("vms") or []
    rows = [r for r in listed if isinstance(r, dict) and r.get("vmid")]
    same = [r for r in rows if str(r.get("name") or "") == vm]
    if not same:
        same = [r for r in rows if str(r.get("name") or "").lower() == vm.lower()]
    if len(same) == 1:
        return int(same[0]["vmid"])
    if len(same) > 1:
        ids = ", ".join(f"{r['vmid']} on {r.get('node') or '?'}" for r in same)
        raise UnknownVmError(f"{len(same)} VMs are named {vm} ({ids}); ask by VM ID")
    names = sorted({str(r.get("name")) for r in rows if r.get("name")})
    close = difflib.get_close_matches(vm, names, n=2, cutoff=0.6)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise UnknownVmError(f"there is no VM named {vm}{hint}")


def node_named(asked: str, service: Any) -> str | None:
    """The service's own spelling of node ``asked`` when it differs only in case, else None."""
    try:
        body = service.cluster()
    except Exception:  # noqa: BLE001 - no node list is no reason to fail the answer
        return None
    nodes = [str(n.get("name")) for n in body.get("nodes") or [] if isinstance(n, dict) and n.get("name")]
    same = [n for n in nodes if n.lower() == asked.lower() and n != asked]
    return same[0] if len(same) == 1 else None


def with_node(asked: str, service: Any, call: Any) -> Any:
    """``call(node)``; when the service knows no node ``asked``, once more with its own spelling
    of that name (node names in any case)."""
    try:
        return call(asked)
    except UnknownNodeError:
        spelled = node_named(asked, service)
        if spelled is None:
            raise
        return call(spelled)
