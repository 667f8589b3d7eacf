"""The what-if block of ``/v1/cluster/recommendation``: the cluster's online nodes with imagined
nodes added (a shipped CPU by name, or a host given as data) and nodes removed, judged by the
engine (engine/whatif.py) on the service's facts."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from migration_guard.engine import baseline, pve_versions
from migration_guard.engine.cpus import find_cpu
from migration_guard.engine.facts import NodeFacts, VmFacts
from migration_guard.engine.hosts import host_from_json
from migration_guard.engine.whatif import imagined_node, what_if
from migration_guard.errors import HostDataError, InputError, UnknownNodeError
from migration_guard.service.custom_model import plan_body, vms_that_gain

#: at most this many imagined nodes in one question
MAX_ADDED = 16


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def added_hosts(cluster: str, add: Sequence[str], hosts: Sequence[dict], taken: set[str]) -> list[NodeFacts]:
    """The imagined nodes: ``new-epyc-9654`` for ``add=EPYC 9654`` (``-2``, ... for more of the
    same), a host given as data under its own name (``new-`` in front when a node has it)."""
    if len(add) + len(hosts) > MAX_ADDED:
        raise InputError(f"at most {MAX_ADDED} added nodes in one question, not {len(add) + len(hosts)}")
    used = set(taken)
    out: list[NodeFacts] = []

    def name_for(base: str) -> str:
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        return name

    for text in add:
        if not text.strip():
            raise InputError(
                "add= names no CPU: give a shipped CPU such as 'EPYC 9654' (GET /v1/cpus lists them)"
            )
        cpu = find_cpu(text)
        out.append(imagined_node(cluster, cpu.as_node(name_for("new-" + _slug(cpu.name)))))
    for i, raw in enumerate(hosts, 1):
        try:
            host = host_from_json(raw, f"host-{i}")
        except HostDataError as exc:
            raise InputError(f"added host {i}: {exc}") from None
        base = host.name if host.name not in taken else "new-" + host.name
        renamed = dataclasses.replace(host, name=name_for(_slug(base) or f"host-{i}"))
        out.append(imagined_node(cluster, renamed))
    return out


def check_removed(cluster: str, remove: Sequence[str], known: Sequence[str]) -> list[str]:
    unknown = [n for n in remove if n not in known]
    if unknown:
        raise UnknownNodeError(
            f"cluster {cluster} has no node {', '.join(unknown)} to remove; "
            f"its nodes are {', '.join(sorted(known))}"
        )
    return list(dict.fromkeys(remove))


def what_if_block(
    cluster: str,
    nodes: Sequence[NodeFacts],
    all_names: Sequence[str],
    vms: Sequence[VmFacts],
    *,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    hosts: Sequence[dict] = (),
    checked_at: str = "",
) -> dict[str, Any]:
    """The ``what_if`` block: the change, the recommendation after it, the VMs that would break,
    gain or have to move."""
    removed = check_removed(cluster, remove, all_names)
    added = added_hosts(cluster, add, hosts, set(all_names))
    result = what_if(nodes, vms, remove=removed, add=added)
    after = [n for n in nodes if n.name not in removed and n.cpu is not None] + added
    body = asdict(result)
    body["custom_model"] = custom_model(cluster, after, vms, checked_at) if after else None
    body["added"] = [
        {
            "node": n.name,
            "cpu_model": n.cpu_model,
            "vendor": n.cpu.vendor if n.cpu else None,
            "flag_source": n.flag_source,
        }
        for n in added
    ]
    for key in ("would_break", "would_gain", "must_move", "blocked_on_added"):
        for change in body[key]:
            change["cannot_run_on"] = [
                {k: v for k, v in c.items() if k != "reason" or v} for c in change["cannot_run_on"]
            ]
    body["summary"] = summary(result.recommended_before, result.recommended_after, body)
    return body


def custom_model(cluster: str, after: Sequence[NodeFacts], vms: Sequence[VmFacts], checked_at: str) -> dict:
    """The cluster's best custom CPU model after the change (engine/baseline.py), in the shape of
    ``GET /v1/cluster/custom-model``'s answer, with the VMs on the nodes after it that would gain."""
    made = baseline.plan([n.cpu for n in after if n.cpu is not None], spell=pve_versions.Namer(after))
    gain = vms_that_gain(made, vms, {n.name for n in after})
    return plan_body(made, gain, cluster=cluster, without_flags=[], checked_at=checked_at)


def summary(before: str | None, after: str | None, body: dict) -> str:
    """One sentence: what the change does to the recommended type and to the VMs."""
    what = ", ".join(
        [f"adding {a['node']} ({a['cpu_model'] or 'unknown CPU'})" for a in body["added"]]
        + [f"removing {r}" for r in body["removed"]]
    )
    if before == after:
        rec = f"the recommended CPU type stays {after}"
    else:
        rec = f"the recommended CPU type changes from {before} to {after}"
    parts = [rec]
    if body["would_break"]:
        parts.append(f"{len(body['would_break'])} VMs' CPU types would no longer run on every node")
    if body["would_gain"]:
        parts.append(f"{len(body['would_gain'])} VMs' CPU types would run on every node")
    if body["must_move"]:
        parts.append(f"{len(body['must_move'])} VMs must move off the removed nodes first")
    if body["blocked_on_added"]:
        parts.append(
            f"{len(body['blocked_on_added'])} VMs already limited could not run on the new node either"
        )
    return f"{what[0].upper() + what[1:] if what else 'No change'}: " + "; ".join(parts)
