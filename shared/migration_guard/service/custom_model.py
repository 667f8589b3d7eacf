"""``GET /v1/cluster/custom-model``: the cluster's best custom CPU model from the chosen nodes' facts
(the same facts the verdicts use), and the VMs that would gain from it; ``POST`` creates it in
Proxmox through ``/cluster/qemu/custom-cpu-models`` (the service's token needs ``Mapping.Modify``
on ``/mapping/cpu``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from migration_guard.engine import baseline, pve_versions
from migration_guard.engine.checks import vm_spec
from migration_guard.engine.cpu_spec import parse_custom_models
from migration_guard.engine.facts import VmFacts
from migration_guard.errors import CpuSpecError, InputError
from migration_guard.store.events import iso_utc

NAME_RULE = "2 to 40 letters, digits, '-' or '_', starting with a letter (Proxmox's pve-configid)"


def check_name(name: str) -> str:
    """A custom model's name as Proxmox accepts it (``custom-`` optional). Raises InputError."""
    bare = name[len("custom-") :] if name.startswith("custom-") else name
    ok = (
        2 <= len(bare) <= 40
        and bare.isascii()
        and bare[0].isalpha()
        and all(c.isalnum() or c in "-_" for c in bare)
    )
    if not ok:
        raise InputError(f"custom model name {name[:60]!r} is not valid: {NAME_RULE}")
    return bare


def plan_body(
    made: baseline.Plan,
    gain: list[dict],
    *,
    cluster: str | None = None,
    without_flags: list[str] | None = None,
    checked_at: str | None = None,
) -> dict:
    """A CustomModelBody in its fields' order (the API, the what-if block, the CLI's --host, which
    has no cluster: ``None`` leaves a field out)."""
    body: dict[str, Any] = {"cluster": cluster, "name": made.name, "nodes": list(made.nodes)}
    body.update(
        nodes_without_flags=without_flags,
        reported_model=made.reported_model,
        flags=list(made.flags),
        phys_bits=made.phys_bits,
        left_out=[{"flag": x.flag, "why": x.why} for x in made.left_out],
        section=made.section,
        gains_over={"level": made.level, "features": list(made.gains)},
        vms_that_gain=gain,
        notes=list(made.notes),
        checked_at=checked_at,
    )
    return {k: v for k, v in body.items() if v is not None or k == "phys_bits"}


def vms_that_gain(made: baseline.Plan, vms: Iterable[VmFacts], nodes: set[str]) -> list[dict]:
    """The VMs on ``nodes`` whose CPU type the model would give more features (a VM whose cpu line
    cannot be read is left out: its verdicts say why)."""
    gain = []
    for vm in vms:
        if vm.node not in nodes:  # only a VM on the chosen nodes can use the model
            continue
        try:
            gained = baseline.gain_of(vm_spec(vm), made)
        except CpuSpecError:
            continue
        if gained:
            gain.append(
                {
                    "vmid": vm.vmid,
                    "name": vm.name,
                    "node": vm.node,
                    "cpu": vm.cpu or "kvm64",
                    "gains": list(gained),
                }
            )
    return gain


async def plan(reports: Any, names: list[str] | None, name: str) -> tuple[baseline.Plan, dict]:
    """The model for ``names`` (default: every online node) and its API body."""
    bare = check_name(name)
    facts = await reports._online_hosts(names)
    known = [n for n in facts if n.cpu is not None]
    if not known:
        raise InputError("no chosen node has CPU facts: a custom model cannot be computed")
    spell = pve_versions.Namer(known)
    made = baseline.plan([n.cpu for n in known], name=bare, spell=spell)
    gain = vms_that_gain(made, await reports.all_vm_facts(), set(made.nodes))
    body = plan_body(
        made,
        gain,
        cluster=reports.facts.cluster,
        without_flags=[n.name for n in facts if n.cpu is None],
        checked_at=iso_utc(reports.facts.clock()),
    )
    return made, body


async def apply(reports: Any, names: list[str] | None, name: str) -> dict:
    """Create the model in Proxmox; refuses a name the cluster already defines."""
    made, body = await plan(reports, names, name)
    existing = await reports.facts.custom_models()
    if existing is not None:
        try:
            taken = made.name in parse_custom_models(existing)
        except CpuSpecError:
            taken = False  # Proxmox itself refuses a duplicate
        if taken:
            raise InputError(
                f"the cluster already has a custom CPU model {made.name}: choose another name (--name) "
                "or delete it in Datacenter > Custom CPU Models first"
            )
    create = getattr(reports.facts.reader, "create_custom_cpu_model", None)
    if create is None:
        raise InputError("this cluster reader cannot create custom CPU models")
    await reports.facts._run(create, made.model)
    await reports.facts.custom_models(renew_after=0.0)  # checks read the new list from now on
    return {**body, "created": True}
