"""Service answers -> Slack messages (Block Kit + plain ``text`` fallback).

``answer(intent, client, command)`` is the one entry point used by every listener and by the
console: it calls the service, and turns the body (or the error) into an ``Answer``. Every
string from Proxmox or the service goes through migration_guard_bot.messages (``code``/``prose``/``plain``).
"""

from __future__ import annotations

import difflib
import logging
from typing import Any, Protocol

from migration_guard.errors import (
    GuardError,
    InputError,
    ServiceUnavailable,
    UnknownClusterError,
    UnknownNodeError,
    UnknownVmError,
)
from migration_guard_bot import blocks as bk
from migration_guard_bot.answer_parts import Answer, _cpu_label, _lacks, _reasons, _vm_label, _when
from migration_guard_bot.ask.dispatch import answer_more
from migration_guard_bot.ask.resolve import vmid_of, with_node
from migration_guard_bot.messages import code, plain, prose
from migration_guard_bot.parser import Check, Decisions, Help, Intent, Recommend, Targets

log = logging.getLogger(__name__)

DECISIONS_LIMIT = 10


class Service(Protocol):
    """The service's API as migration_guard.client.ServiceClient calls it; each answer has the
    shape the API documents (migration_guard.api.models, GET /openapi.json)."""

    def check(self, vmid: int, target: str, target_cluster: str | None = None) -> Any: ...
    def targets(self, vmid: int, all_clusters: bool = False) -> Any: ...
    def decisions(self, limit: int = 10, vmid: int | None = None) -> Any: ...
    def cluster(self) -> Any: ...
    def recommendation(self, nodes: tuple[str, ...] = ()) -> Any: ...
    def matrix(self, compact: bool = False) -> Any: ...
    def evacuation(self, node: str) -> Any: ...
    def ha_risks(self) -> Any: ...
    def request_override(
        self, vmid: int, target: str, reason: str, ttl_s: int = 900, requested_by: str = ""
    ) -> Any: ...
    def approve_override(self, override_id: str, approved_by: str) -> Any: ...
    def overrides(self, limit: int = 100) -> Any: ...


_ICON = {"allow": ":white_check_mark:", "deny": ":no_entry:", "unknown": ":grey_question:"}
_WORD = {"allow": "Yes", "deny": "No", "unknown": "Not sure"}


# --- entry point ---------------------------------------------------------------------------


def answer(intent: Intent, service: Service, command: str = "/canmove", *, user: str = "") -> Answer:
    """The answer to ``intent``; ``user``: who asks, as recorded (``slack:U123``, a console user)."""
    if isinstance(intent, Help):
        return help_answer(command, intent.problem)
    try:
        if not isinstance(intent, (Check, Targets, Recommend, Decisions)):
            return answer_more(intent, service, user)  # the newer questions
        if isinstance(intent, Check):
            vmid = vmid_of(intent.vm, service)
            return verdict_answer(
                with_node(intent.target, service, lambda n: service.check(vmid, n, intent.target_cluster))
            )
        if isinstance(intent, Targets):
            vmid = vmid_of(intent.vm, service)
            return targets_answer(vmid, service.targets(vmid, all_clusters=True))
        if isinstance(intent, Recommend):
            return recommendation_answer(service.recommendation(intent.nodes))
        if isinstance(intent, Decisions):
            vmid_or_none = None if intent.vm is None else vmid_of(intent.vm, service)
            return decisions_answer(vmid_or_none, service.decisions(DECISIONS_LIMIT, vmid_or_none))
    except (UnknownVmError, UnknownNodeError, UnknownClusterError) as exc:
        return not_found_answer(exc, intent, service)
    except GuardError as exc:
        return error_answer(exc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a body we cannot read
        log.warning("could not read the service's answer to %s: %r", type(intent).__name__, exc)
        return error_answer(
            GuardError(
                "the service answered something the bot cannot read; "
                "are the bot and the service the same version?"
            )
        )
    return help_answer(command)


# --- help and errors -----------------------------------------------------------------------


def help_answer(command: str = "/canmove", problem: str = "") -> Answer:
    examples = [
        ("can vm 101 move to node3?", f"{command} 101 node3", "yes/no with reasons"),
        ("where can vm 101 go?", f"{command} 101", "every node with its verdict"),
        ("which cpu type should we use?", f"{command} recommend node1 node2", "the cluster's CPU type"),
        ("why was 101 blocked?", f"{command} recent blocks", "the latest decisions"),
        ("can I put node3 in maintenance?", f"{command} evacuate node3", "every VM on it, stuck ones first"),
        ("which HA VMs cannot recover?", f"{command} HA risks", "HA VMs a node failure would strand"),
        (
            "which nodes can run x86-64-v3?",
            f"{command} which nodes run x86-64-v3",
            "each node, or what it lacks",
        ),
        (
            "let 101 through to node3 once because …",
            f"{command} override 101 to node3 because …",
            "approved by another",
        ),
        ("what if we add an EPYC 9654 node?", f"{command} what if we retire node3", "the cluster after it"),
    ]
    intro = "Ask me about live migrations and CPU types:"
    lines = [f"“{q}”  or  `{c}`  – {what}" for q, c, what in examples]
    mrk = (prose(problem) + " " if problem else "") + intro + "\n" + bk.bullets(lines)
    text = (problem + " " if problem else "") + intro + " " + "; ".join(f"{q} ({c})" for q, c, _ in examples)
    return Answer(
        text=plain(text),
        blocks=[
            bk.section(mrk),
            bk.context(
                "Mention me, DM me, or use "
                + code(command)
                + ". Another cluster: can vm 101 move to clusterB/node5?"
            ),
        ],
        public=False,
    )


def error_answer(exc: GuardError) -> Answer:
    """One line: the service is down, slow or refused us."""
    if isinstance(exc, ServiceUnavailable):
        line = f"Cannot answer right now: {exc}. Try again in a minute."
    elif isinstance(exc, InputError):
        line = f"The service cannot answer that: {exc}"
    else:
        line = f"Cannot answer: {exc}"
    return Answer(text=plain(line), blocks=[bk.section(":warning: " + prose(line))], public=False)


def not_found_answer(exc: GuardError, intent: Intent, service: Service) -> Answer:
    """An unknown VM, node or cluster: say so, name the known nodes and the closest match."""
    nodes = _known_nodes(service)
    msg = str(exc).strip().rstrip(".")
    parts: list[tuple[str, str]] = []  # (mrkdwn, plain text) of each sentence
    cluster = getattr(intent, "target_cluster", None) or ""
    if isinstance(exc, UnknownVmError):
        asked_vm = getattr(intent, "vm", "")
        said = msg[:1].upper() + msg[1:] if msg else f"I don't know VM {asked_vm}"
        check = "Is the name right?" if isinstance(asked_vm, str) else "Is the VM ID right?"
        parts += [(prose(said) + ".", said + "."), (check, check)]
    elif isinstance(exc, UnknownClusterError):
        tail = f" ({msg})" if msg else ""
        parts.append(
            (f"There is no cluster {code(cluster)}{prose(tail)}.", f"There is no cluster {cluster}{tail}.")
        )
    else:
        asked = getattr(intent, "target", None) or ""
        if not asked and isinstance(intent, Recommend):
            asked = next((n for n in intent.nodes if n not in nodes), "")
        label = f"{cluster}/{asked}" if cluster and asked else asked
        if label:
            parts.append((f"There is no node {code(label)}.", f"There is no node {label}."))
        else:
            parts.append((prose(msg) + ".", msg + "."))
        close = difflib.get_close_matches(asked, nodes, n=1, cutoff=0.5) if asked and nodes else []
        if close:
            parts.append((f"Did you mean {code(close[0])}?", f"Did you mean {close[0]}?"))
    if nodes:
        parts.append(
            (
                "Known nodes: " + ", ".join(code(n) for n in nodes) + ".",
                "Known nodes: " + ", ".join(nodes) + ".",
            )
        )
    return Answer(
        text=plain(" ".join(t for _, t in parts)),
        blocks=[bk.section(":mag: " + " ".join(m for m, _ in parts))],
        public=False,
    )


def _known_nodes(service: Service) -> list[str]:
    try:
        body = service.cluster()
    except GuardError:
        return []
    nodes = body.get("nodes") if isinstance(body, dict) else None  # no names is no reason to fail
    return [str(n["name"]) for n in nodes or [] if isinstance(n, dict) and n.get("name")]


# --- verdicts ------------------------------------------------------------------------------


def verdict_answer(body: dict[str, Any], *, veto: bool = False) -> Answer:
    """One verdict (a /check answer, or a veto event when ``veto``)."""
    verdict = str(body.get("verdict") or "unknown")
    vm = _vm_label(body)
    src, dst = body.get("source"), body.get("target")
    src_c, dst_c = body.get("source_cluster"), body.get("target_cluster")
    dst_label = f"{dst_c}/{dst}" if dst_c and dst_c != src_c else f"{dst}"
    if veto:
        enforced = body.get("enforced", True)
        icon = ":no_entry:" if enforced else ":warning:"
        head_m = (
            f"*{icon} Blocked:* live migration of {vm['m']} to {code(dst_label)}"
            if enforced
            else f"*{icon} Would block:* live migration of {vm['m']} to {code(dst_label)} "
            "(warn mode, not stopped)"
        )
        head_t = (
            f"Blocked: live migration of {vm['t']} to {dst_label}"
            if enforced
            else f"Would block (warn mode): live migration of {vm['t']} to {dst_label}"
        )
    else:
        word = _WORD.get(verdict, "Not sure")
        icon = _ICON.get(verdict, ":grey_question:")
        phrase = {"allow": "can move to", "deny": "cannot move to"}.get(verdict, "may or may not move to")
        head_m = f"*{icon} {word}:* {vm['m']} {phrase} {code(dst_label)}"
        head_t = f"{word.upper()}: {vm['t']} {phrase} {dst_label}"
    reasons = _reasons(body)
    suggestion = str(body.get("suggestion") or "")
    cpu = body.get("cpu")
    cpu_s = _cpu_label(cpu)
    blocks = [
        bk.section(head_m),
        bk.fields(
            ("VM", vm["m"]),
            ("CPU type", code(cpu_s) if cpu_s else "–"),
            ("Move", f"{code(src or '?')} → {code(dst_label)}"),
        ),
    ]
    if reasons:
        blocks.append(bk.section("*Why*\n" + bk.bullets([_reason_m(r) for r in reasons])))
    if suggestion:
        blocks.append(bk.section("*Suggestion*\n" + prose(suggestion)))
    ctx = _context(body)
    if ctx:
        blocks.append(bk.context(ctx))
    text = head_t + (f" (CPU type {cpu_s})" if cpu_s else "") + (f", from {src}" if src else "") + "."
    if reasons:
        text += " Why: " + "; ".join(str(r.get("message") or r.get("code") or "") for r in reasons) + "."
    if suggestion:
        text += " Suggestion: " + suggestion
    return Answer(text=plain(text), blocks=blocks)


def targets_answer(vmid: int, body: dict[str, Any]) -> Answer:
    """Every other node as a target (a /targets answer: ``targets``, one verdict each)."""
    rows: list[dict[str, Any]] = body["targets"]
    vm = _vm_label({"vmid": body.get("vmid", vmid), "name": body.get("name")})
    src = body.get("source")
    allowed = [r for r in rows if r.get("verdict") == "allow"]
    head = (
        f"{vm['t']}"
        + (f" on {src}" if src else "")
        + f": can move to {len(allowed)} of {len(rows)} other nodes"
    )
    head_m = (
        f"*{vm['m']}*"
        + (f" on {code(src)}" if src else "")
        + f": can move to *{len(allowed)} of {len(rows)}* other nodes"
    )
    lines_m, lines_t = [], []
    for r in rows:
        v = str(r.get("verdict") or "unknown")
        node = str(r.get("target") or "?")
        if r.get("target_cluster") and r.get("target_cluster") != r.get("source_cluster"):
            node = f"{r['target_cluster']}/{node}"
        reasons = _reasons(r)
        why = (
            str(reasons[0].get("message") or reasons[0].get("code") or "") if reasons and v != "allow" else ""
        )
        lines_m.append(
            f"{_ICON.get(v, ':grey_question:')} {code(node)} {_WORD.get(v, v).lower()}"
            + (f" – {prose(why)}" if why else "")
        )
        lines_t.append(f"{node}: {_WORD.get(v, v).lower()}" + (f" ({why})" if why else ""))
    if not rows:
        lines_m, lines_t = ["There is no other node in the cluster."], ["there is no other node"]
    blocks = [bk.section(head_m + "\n" + bk.bullets(lines_m, 40))]
    cpu_s = _cpu_label(rows[0].get("cpu")) if rows else ""
    if cpu_s:
        blocks.append(bk.context("CPU type " + code(cpu_s)))
    # clusters (or nodes) the service could not ask: say so, a missing node is not a "no"
    errors: list[dict[str, Any]] = body.get("errors") or []
    unasked = [
        (f"{e.get('cluster')}/{e['node']}" if e.get("node") else str(e.get("cluster") or "?"))
        + f" ({e.get('message') or e.get('code') or 'no answer'})"
        for e in errors
    ]
    text = head + ". " + "; ".join(lines_t) + "."
    if unasked:
        blocks.append(bk.context("Not asked: " + prose("; ".join(unasked))))
        text += " Not asked: " + "; ".join(unasked) + "."
    return Answer(text=plain(text), blocks=blocks)


def recommendation_answer(body: dict[str, Any]) -> Answer:
    """The cluster's CPU type (``recommended``) and the VMs whose type some node cannot run."""
    cpu_type = body["recommended"]  # null when no type runs on every node
    nodes = [str(n) for n in body["nodes"]]
    why = str(body.get("reason") or "")
    vms: list[dict[str, Any]] = body["vms_at_risk"]
    where_m = (" for " + ", ".join(code(n) for n in nodes)) if nodes else ""
    where_t = (" for " + ", ".join(nodes)) if nodes else ""
    if cpu_type:
        head_m = f"*:bulb: Recommended CPU type{where_m}:* {code(cpu_type)}"
        head_t = f"Recommended CPU type{where_t}: {cpu_type}."
    else:
        head_m = f"*:warning: No CPU type runs on every node{where_m}.*"
        head_t = f"No CPU type runs on every node{where_t}."
    no_flags = [str(n) for n in body["nodes_without_flags"]]
    if no_flags:
        why = (why + " " if why else "") + "Not counted (CPU flags unknown): " + ", ".join(no_flags) + "."
    blocks = [bk.section(head_m + (("\n" + prose(why)) if why else ""))]
    text = head_t + (f" {why}" if why else "")
    if vms:
        lines_m, lines_t = [], []
        for vm in vms:
            label = _vm_label(vm)
            cpu_s = _cpu_label(vm.get("cpu"))
            bad: list[dict[str, Any]] = vm.get("cannot_run_on") or []
            bad_m = [code(str(x["node"])) + _lacks(x, True) for x in bad]
            bad_t = [str(x["node"]) + _lacks(x, False) for x in bad]
            lines_m.append(
                label["m"]
                + (f" ({code(cpu_s)})" if cpu_s else "")
                + (" cannot run on " + ", ".join(bad_m) if bad_m else "")
            )
            lines_t.append(
                label["t"]
                + (f" ({cpu_s})" if cpu_s else "")
                + (" cannot run on " + ", ".join(bad_t) if bad_t else "")
            )
        blocks.append(
            bk.section(f"*VMs whose CPU type some node cannot run ({len(vms)})*\n" + bk.bullets(lines_m))
        )
        text += " VMs whose CPU type some node cannot run: " + "; ".join(lines_t) + "."
    else:
        blocks.append(bk.context("Every VM's CPU type runs on every node."))
        text += " Every VM's CPU type runs on every node."
    return Answer(text=plain(text), blocks=blocks)


def decisions_answer(vmid: int | None, rows: list[dict[str, Any]]) -> Answer:
    """The latest decisions (the ``decisions`` list of a /v1/decisions answer), newest first."""
    who = f"VM {vmid}" if vmid is not None else "the cluster"
    if not rows:
        line = f"No recent decisions for {who}."
        return Answer(text=line, blocks=[bk.section(line)])
    lines_m, lines_t = [], []
    for d in rows[:DECISIONS_LIMIT]:
        v = str(d.get("verdict") or "unknown")
        vm = _vm_label(d)
        when = _when(d.get("time"))
        reasons = _reasons(d)
        why = (
            str(reasons[0].get("message") or reasons[0].get("code") or "") if reasons and v != "allow" else ""
        )
        move = f"{code(d.get('source') or '?')} → {code(d.get('target') or '?')}"
        lines_m.append(
            f"{_ICON.get(v, ':grey_question:')} {when} {vm['m']} {move}" + (f" – {prose(why)}" if why else "")
        )
        lines_t.append(
            f"{when} {v} {vm['t']} {d.get('source') or '?'} → {d.get('target') or '?'}"
            + (f" ({why})" if why else "")
        )
    head = f"Latest decisions for {who}"
    return Answer(
        text=plain(head + ": " + "; ".join(lines_t)), blocks=[bk.section(f"*{head}*\n" + bk.bullets(lines_m))]
    )


# --- small readers -------------------------------------------------------------------------


def _reason_m(r: dict[str, Any]) -> str:
    msg = prose(r.get("message") or "")
    c = r.get("code")
    return f"{msg} ({code(c)})" if c and msg else (msg or code(c or "?"))


def _context(body: dict[str, Any]) -> str:
    parts = []
    when = body.get("checked_at") or body.get("time")
    if when:
        parts.append("checked " + _when(when))
    age = body.get("facts_age_s")
    if isinstance(age, (int, float)):
        parts.append(f"cluster facts {int(age)} s old")
    if body.get("id"):
        parts.append("event " + code(body["id"]))
    return " · ".join(parts)


__all__ = [
    "Answer",
    "Service",
    "_cpu_label",
    "_lacks",
    "_reasons",
    "_vm_label",
    "_when",
    "answer",
    "decisions_answer",
    "error_answer",
    "help_answer",
    "not_found_answer",
    "recommendation_answer",
    "targets_answer",
    "verdict_answer",
]
