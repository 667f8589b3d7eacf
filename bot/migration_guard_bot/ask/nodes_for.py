"""``which nodes can run x86-64-v3?``, from the service's recommendation answers: the cluster's
(a type in ``ranked`` runs on every node; a better type in ``blocked`` fails on the nodes named
there), else each node's own (its ``ranked`` lists every type weighed that it runs)."""

from __future__ import annotations

from typing import Any

from migration_guard_bot import blocks as bk
from migration_guard_bot.answer_parts import Answer, _lacks
from migration_guard_bot.messages import code, plain, prose


def runs_on(cpu: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """From one RecommendationBody: node -> None (runs) or its ``blocked`` row (does not); None when
    this answer does not weigh ``cpu``."""
    want = cpu.lower()
    nodes = [str(n) for n in body.get("nodes") or []]
    if any(str(t).lower() == want for t in body.get("ranked") or []):
        return dict.fromkeys(nodes)
    fails = [
        b for b in body.get("blocked") or [] if isinstance(b, dict) and str(b.get("type")).lower() == want
    ]
    if not fails:
        return None
    bad = {str(b.get("node")): b for b in fails}
    return {n: bad.get(n) for n in nodes}


def nodes_for(cpu: str, service: Any) -> Answer:
    cluster = service.recommendation(())
    verdicts = runs_on(cpu, cluster)
    if verdicts is None:  # not weighed cluster-wide (another vendor's model, ...): node by node
        nodes = [str(n) for n in cluster.get("nodes") or []]
        verdicts = {}
        for node in nodes:
            one = runs_on(cpu, service.recommendation((node,)))
            verdicts[node] = one.get(node) if one is not None else {"unknown": True}
    yes = [n for n, v in verdicts.items() if v is None]
    no = [(n, v) for n, v in verdicts.items() if v is not None and not v.get("unknown")]
    unsure = [n for n, v in verdicts.items() if v is not None and v.get("unknown")]
    if not yes and not no:
        line = (
            f"I cannot tell which nodes run {cpu}: the service weighs the generic types and the "
            "models of each node's vendor, and this is none of them. Is the name right "
            "(e.g. x86-64-v3, Skylake-Server-v4, EPYC-Rome)?"
        )
        return Answer(text=plain(line), blocks=[bk.section(":grey_question: " + prose(line))], public=False)
    head_m = f"*{code(cpu)} runs on {len(yes)} of {len(verdicts)} nodes*"
    lines_m = [f":white_check_mark: {code(n)}" for n in yes]
    lines_m += [f":no_entry: {code(n)}{_lacks(v, True, 8)}" for n, v in no]
    lines_m += [f":grey_question: {code(n)} – not weighed for that node" for n in unsure]
    text = f"{cpu} runs on {', '.join(yes) or 'no node'}"
    if no:
        text += "; not on " + ", ".join(f"{n}{_lacks(v, False, 8)}" for n, v in no)
    if unsure:
        text += "; unknown on " + ", ".join(unsure)
    return Answer(text=plain(text + "."), blocks=[bk.section(head_m + "\n" + bk.bullets(lines_m, 40))])
