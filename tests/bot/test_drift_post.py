"""A drift event on the stream: read as one (not as a veto, not dropped), posted as its own message
(never a repeat of another), and the message names the flags, the versions and the VMs."""

from __future__ import annotations

import json

from migration_guard.store.stream import decode_event
from migration_guard_bot.veto import parse_entry, veto_message

EVENT = {
    "kind": "drift",
    "id": "01DRIFT0000000000000000001",
    "time": "2026-12-06T22:40:00.000Z",
    "cluster": "lab",
    "node": "pve-bdw2",
    "appeared": [],
    "vanished": ["hle", "rtm"],
    "qemu_before": "9.2",
    "qemu_after": "10.1",
    "changed": {"qemu_version": ["9.2", "10.1"]},
    "vms_now_blocked": [
        {
            "vmid": 105,
            "name": "legacy-erp",
            "cpu": "Broadwell",
            "direction": "to",
            "node": "pve-bdw1",
            "reason": "pve-bdw2 lacks hle, rtm needed by cpu Broadwell: QEMU refuses to start it there",
        }
    ],
    "vms_now_movable": [
        {"vmid": 110, "name": "<b>x</b>", "cpu": "host", "direction": "from", "node": "pve-bdw1"}
    ],
}


def test_a_drift_entry_is_read_and_a_damaged_one_is_not():
    assert decode_event({"event": json.dumps(EVENT)}) == EVENT
    assert decode_event({"event": json.dumps({**EVENT, "node": None})}) is None
    assert decode_event({"event": json.dumps({"kind": "drift", "node": "x"})}) is None  # no id


def test_the_post_names_the_node_the_flags_the_versions_and_both_vms():
    veto = parse_entry("1-0", {"event": json.dumps(EVENT)})
    assert veto is not None and veto.is_drift and veto.event_id == EVENT["id"]
    assert veto.thread_key == f"drift:{EVENT['id']}"  # a message of its own, never an edit
    message = veto_message(veto)
    text = message.text
    assert text.startswith("CPU facts of node pve-bdw2 changed: flags vanished: hle rtm; QEMU 9.2 → 10.1.")
    assert "Can no longer move: VM 105 legacy-erp (Broadwell): pve-bdw1 → pve-bdw2" in text
    assert "Can move now: VM 110 &lt;b&gt;x&lt;/b&gt; (host): pve-bdw2 → pve-bdw1" in text
    blocks = json.dumps(message.blocks)
    assert "`hle`" in blocks and "`rtm`" in blocks and "`legacy-erp`" in blocks and "<b>" not in blocks


def test_a_change_that_moves_no_vm_says_so():
    quiet = {**EVENT, "vms_now_blocked": [], "vms_now_movable": [], "changed": {}}
    text = veto_message(parse_entry("2-0", {"event": json.dumps(quiet)})).text
    assert text.endswith("No VM's migrations to or from this node change.")
