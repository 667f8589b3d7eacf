"""The Slack message of a drift event (a node's CPU facts changed: ``kind: drift`` on the event
stream, published by the service's drift alarm): which flags appeared or vanished, what else
changed (QEMU, Proxmox, CPU model), and which VMs just became unmovable to or from the node, or
movable."""

from __future__ import annotations

from typing import Any

from migration_guard_bot import blocks as bk
from migration_guard_bot.answer_parts import Answer
from migration_guard_bot.messages import code, plain, prose

_FIELD_WORDS = {
    "qemu_version": "QEMU",
    "pve_version": "Proxmox VE",
    "cpu_model": "CPU model",
    "phys_bits": "physical address bits",
}


def _names(values: Any) -> list[str]:
    return [str(v) for v in values] if isinstance(values, list) else []


def _vm_line(vm: dict[str, Any], node: str, mrkdwn: bool) -> str:
    c = code if mrkdwn else str
    name = f" {c(vm['name'])}" if vm.get("name") else ""
    cpu = f" ({c(vm.get('cpu') or 'kvm64')})"
    other = str(vm.get("node") or "?")
    source, target = (node, other) if vm.get("direction") == "from" else (other, node)
    move = f"{c(source)} → {c(target)}"
    line = f"VM {vm.get('vmid')}{name}{cpu}: {move}"
    reason = vm.get("reason")
    if reason:
        line += " – " + (prose(reason) if mrkdwn else str(reason))
    return line


def _changes(body: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(mrkdwn lines, text parts) of what changed on the node."""
    lines_m: list[str] = []
    parts_t: list[str] = []
    vanished, appeared = _names(body.get("vanished")), _names(body.get("appeared"))
    if vanished:
        lines_m.append("Flags vanished: " + ", ".join(code(f) for f in vanished))
        parts_t.append("flags vanished: " + " ".join(vanished))
    if appeared:
        lines_m.append("Flags appeared: " + ", ".join(code(f) for f in appeared))
        parts_t.append("flags appeared: " + " ".join(appeared))
    changed = body.get("changed")
    for key, pair in changed.items() if isinstance(changed, dict) else []:
        if not isinstance(pair, list) or len(pair) != 2:
            continue
        word = _FIELD_WORDS.get(str(key), str(key))
        before, after = (str(v) if v not in (None, "") else "unknown" for v in pair)
        lines_m.append(f"{word}: {code(before)} → {code(after)}")
        parts_t.append(f"{word} {before} → {after}")
    return lines_m, parts_t


def drift_message(body: dict[str, Any]) -> Answer:
    """The post of one drift event."""
    node = str(body.get("node") or "?")
    cluster = str(body.get("cluster") or "")
    where_m = code(node) + (f" (cluster {code(cluster)})" if cluster else "")
    lines_m, parts_t = _changes(body)
    blocks = [
        bk.section(f"*:warning: CPU facts of node {where_m} changed*\n" + "\n".join(lines_m)),
    ]
    text = f"CPU facts of node {node} changed: " + ("; ".join(parts_t) or "no details") + "."
    blocked = [v for v in body.get("vms_now_blocked") or [] if isinstance(v, dict)]
    movable = [v for v in body.get("vms_now_movable") or [] if isinstance(v, dict)]
    if blocked:
        blocks.append(
            bk.section(
                f"*:no_entry: VMs that can no longer move ({len(blocked)})*\n"
                + bk.bullets([_vm_line(v, node, True) for v in blocked])
            )
        )
        text += " Can no longer move: " + "; ".join(_vm_line(v, node, False) for v in blocked) + "."
    if movable:
        blocks.append(
            bk.section(
                f"*:white_check_mark: VMs that can move now ({len(movable)})*\n"
                + bk.bullets([_vm_line(v, node, True) for v in movable])
            )
        )
        text += " Can move now: " + "; ".join(_vm_line(v, node, False) for v in movable) + "."
    if not blocked and not movable:
        blocks.append(bk.context("No VM's migrations to or from this node change."))
        text += " No VM's migrations to or from this node change."
    blocks.append(
        bk.context(
            "A BIOS, microcode, kernel or QEMU update changes what a node offers. "
            "GET /v1/drift lists the latest changes."
        )
    )
    return Answer(text=plain(text), blocks=blocks)
