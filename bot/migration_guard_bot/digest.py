"""The evacuation digest, pure: decisions of one source node that arrive close together (a node in
maintenance, an evacuation) are one *burst*; its Slack message is one digest, drawn again as
decisions arrive: "pve3 evacuation: 40 VMs, 38 moved, 2 blocked: VM 104 (x86-64-v4, nowhere to
go), ...".

A burst is a plain dict (kept as JSON in Redis by ``digest_poster``): ``first``/``last`` (stream
times, ms), ``ts`` (its Slack message, "" before it is posted), ``vms`` (vmid -> the latest
decision of that VM: a VM blocked and then moved counts as moved; HA's retries of a blocked VM are
one VM), ``stuck`` (vmid -> fix, from the service's evacuation answer: no node can take it).
"""

from __future__ import annotations

import time
from typing import Any

from migration_guard_bot import blocks as bk
from migration_guard_bot.answer_parts import Answer, _vm_label
from migration_guard_bot.messages import code, plain, prose

SHOWN = 20


def new_burst(at_ms: int) -> dict[str, Any]:
    return {"first": at_ms, "last": at_ms, "ts": "", "vms": {}, "stuck": {}}


def add(burst: dict[str, Any], decision: dict[str, Any], at_ms: int) -> None:
    """The latest decision of its VM (ours: stream order is time order)."""
    reasons = decision.get("reasons") or []
    first = reasons[0] if reasons and isinstance(reasons[0], dict) else {}
    burst["vms"][str(decision.get("vmid"))] = {
        "vmid": decision.get("vmid"),
        "name": decision.get("name") or "",
        "cpu": decision.get("cpu") or "",
        "target": decision.get("target") or "",
        "verdict": decision.get("verdict") or "unknown",
        "enforced": (decision.get("mode") or "enforce") == "enforce",
        "why": str(first.get("message") or first.get("code") or decision.get("code") or ""),
    }
    burst["last"] = max(int(burst["last"]), at_ms)


def counts(burst: dict[str, Any]) -> dict[str, int]:
    rows = list(burst["vms"].values())
    blocked = [r for r in rows if r["verdict"] == "deny" and r["enforced"]]
    unknown = [r for r in rows if r["verdict"] == "unknown"]
    return {"vms": len(rows), "blocked": len(blocked), "unknown": len(unknown)}


def blocked_rows(burst: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in burst["vms"].values() if r["verdict"] == "deny" and r["enforced"]]


def digest_message(node: str, burst: dict[str, Any], *, ended: bool = False) -> Answer:
    n = counts(burst)
    moved = n["vms"] - n["blocked"] - n["unknown"]
    head = f"{node} evacuation: {n['vms']} VMs, {moved} moved, {n['blocked']} blocked"
    if n["unknown"]:
        head += f", {n['unknown']} not judged"
    lines_m, lines_t = [], []
    for r in sorted(blocked_rows(burst), key=lambda r: int(r["vmid"] or 0)):
        vm = _vm_label(r)
        fix = burst["stuck"].get(str(r["vmid"]))
        cpu = r["cpu"] or "kvm64"
        if fix is not None:
            what_m = "nowhere to go" + (f"; fix: CPU type {code(fix)}" if fix else "")
            what_t = "nowhere to go" + (f"; fix: CPU type {fix}" if fix else "")
        else:
            what_m = f"to {code(r['target'])}: {prose(r['why'])}"
            what_t = f"to {r['target']}: {r['why']}"
        lines_m.append(f"{vm['m']} ({code(cpu)}, {what_m})")
        lines_t.append(f"{vm['t']} ({cpu}, {what_t})")
    icon = ":no_entry:" if n["blocked"] else ":white_check_mark:"
    text = head + (": " + ", ".join(lines_t) if lines_t else "") + "."
    blocks = [bk.section(f"*{icon} {prose(head)}*" + ("\n" + bk.bullets(lines_m, SHOWN) if lines_m else ""))]
    when = f"since {_hm(burst['first'])} UTC, last decision {_hm(burst['last'])} UTC"
    state = "ended" if ended else "updated as decisions arrive"
    warn = [r for r in burst["vms"].values() if r["verdict"] == "deny" and not r["enforced"]]
    ctx = f"{when} · {state} · moved: the guard let the migration start"
    if warn:
        ctx += f" · {len(warn)} of them would have been blocked (warn mode)"
    blocks.append(bk.context(prose(ctx)))
    return Answer(text=plain(text), blocks=blocks)


def _hm(ms: Any) -> str:
    return time.strftime("%H:%M", time.gmtime(int(ms) / 1000))
