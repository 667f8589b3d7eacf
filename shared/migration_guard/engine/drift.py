"""Drift: a node's CPU facts changed between two reads (a BIOS, microcode, kernel or QEMU update:
TSX switched off, AVX-512 hidden, a new QEMU). Pure: the facts' fingerprint, the difference of two
fingerprints, and which VMs that difference just made unmovable to or from the node, or movable.

The fingerprint is what a migration verdict depends on and a reboot does not change: the flags
the node is judged on (its KVM view, else its /proc/cpuinfo flags), their source, the CPU model
name, the QEMU and Proxmox versions, and the physical address width when the facts carry it. A
node that comes back from a reboot with the same facts has the same fingerprint: no drift."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from migration_guard.engine.checks import evaluate
from migration_guard.engine.facts import NodeFacts, VmFacts


@dataclass(frozen=True, slots=True)
class Change:
    """What changed on one node between two fingerprints."""

    appeared: tuple[str, ...]
    vanished: tuple[str, ...]
    #: field -> (before, after) of the other facts that changed (qemu_version, pve_version, ...)
    changed: dict[str, tuple[Any, Any]]


@dataclass(frozen=True, slots=True)
class Moved:
    """A VM whose verdict toward (``to``) or away from (``from``) the drifted node flipped."""

    vmid: int
    name: str
    cpu: str
    direction: str  # "to": onto the drifted node; "from": off it
    other: str  # the VM's node (direction "to") or the target (direction "from")
    reason: str  # the verdict's first reason after the change ("" when it is allowed now)


#: the facts besides the flags that a fingerprint holds (None-valued ones are left out)
FIELDS = ("flag_source", "cpu_model", "qemu_version", "pve_version", "phys_bits")


def fingerprint(node: NodeFacts) -> dict[str, Any] | None:
    """The node's CPU facts as JSON-ready data; None when there are none to compare (offline, or
    its status gave no CPU flags): such a read is neither a baseline nor drift."""
    if not node.online or node.cpu is None:
        return None
    out: dict[str, Any] = {"flags": sorted(node.cpu.flags)}
    for field in FIELDS:
        if field == "flag_source":
            value: Any = node.flag_source
        elif field == "phys_bits":
            value = node.cpu.phys_bits
        else:
            value = getattr(node, field)
        if value not in (None, ""):
            out[field] = value
    return out


def compare(before: Mapping[str, Any], after: Mapping[str, Any]) -> Change | None:
    """The change from ``before`` to ``after``; None when they are the same facts. Flags read from
    different sources (cpuinfo names before, QEMU's KVM view after: the cluster was upgraded to
    report it) cannot be compared name by name: the caller takes ``after`` as a new baseline
    (``comparable`` says so)."""
    old = set(before.get("flags") or ())
    new = set(after.get("flags") or ())
    changed = {
        field: (before.get(field), after.get(field))
        for field in FIELDS
        if field != "flag_source" and before.get(field) != after.get(field)
    }
    if old == new and not changed:
        return None
    return Change(tuple(sorted(new - old)), tuple(sorted(old - new)), changed)


def comparable(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """True when both fingerprints name their flags the same way (same flag source)."""
    return before.get("flag_source") == after.get("flag_source")


def facts_before(now: NodeFacts, before: Mapping[str, Any]) -> NodeFacts:
    """The node as it was when ``before`` was taken: today's facts with the old fingerprint's
    flags, CPU model and versions (what the fingerprint does not hold is taken as unchanged)."""
    cpu = now.cpu
    if cpu is not None:
        cpu = dataclasses.replace(
            cpu,
            flags=frozenset(before.get("flags") or ()),
            model=before.get("cpu_model", cpu.model),
            phys_bits=before.get("phys_bits", cpu.phys_bits),
        )
    values: dict[str, Any] = {
        "cpu": cpu,
        "cpu_model": before.get("cpu_model", now.cpu_model),
        "qemu_version": before.get("qemu_version", now.qemu_version),
        "pve_version": before.get("pve_version", now.pve_version),
    }
    return dataclasses.replace(now, **values)


def _flipped(old: str, new: str) -> str | None:
    """ "blocked" (allowed before, denied now), "movable" (denied before, allowed now) or None."""
    if old == "allow" and new == "deny":
        return "blocked"
    if old == "deny" and new == "allow":
        return "movable"
    return None


def impact(
    before: NodeFacts,
    after: NodeFacts,
    nodes: Mapping[str, NodeFacts],
    vms: Sequence[VmFacts],
) -> tuple[list[Moved], list[Moved]]:
    """(now blocked, now movable): every VM's verdict toward the drifted node (from its own node)
    and, for the VMs on it, toward every other online node, before and after the change."""
    blocked: list[Moved] = []
    movable: list[Moved] = []
    name = after.name
    for vm in sorted(vms, key=lambda v: v.vmid):
        pairs: list[tuple[str, str, NodeFacts, NodeFacts, NodeFacts, NodeFacts]] = []
        if vm.node == name:
            for other in nodes.values():
                if other.name != name and other.online:
                    pairs.append(("from", other.name, before, other, after, other))
        else:
            source = nodes.get(vm.node)
            if source is None or not source.online:
                continue
            pairs.append(("to", vm.node, source, before, source, after))
        for direction, other_name, src0, dst0, src1, dst1 in pairs:
            old = evaluate(vm, src0, dst0)
            new = evaluate(vm, src1, dst1)
            flip = _flipped(old.verdict, new.verdict)
            if flip is None:
                continue
            reason = new.reasons[0].message if flip == "blocked" and new.reasons else ""
            moved = Moved(vm.vmid, vm.name, vm.cpu or "kvm64", direction, other_name, reason)
            (blocked if flip == "blocked" else movable).append(moved)
    return blocked, movable
