"""The cluster reader's node-wide VM status and its one-call-per-VM precondition, over proxmoxer
speaking HTTPS to the Proxmox-shaped test server (the service scenario: VMs 101..106 running on
pve1, 105 with a local usb0 that Proxmox blocks toward pve2, 201 stopped on pve2)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from migration_guard.cluster.reader import vm_facts_from
from migration_guard.engine.facts import Precondition
from migration_guard.errors import GuardError, ProxmoxError
from migration_guard.store.cache import PRECONDITION
from tests.fakes.pve import pve_server, reader_for

SCENARIO = json.loads((Path(__file__).parents[1] / "fixtures" / "service" / "scenario.json").read_text())


@pytest.fixture(scope="module")
def lab():
    with pve_server(SCENARIO) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(lab):
    lab.set_faults()
    lab.reset_counts()
    yield
    lab.set_faults()


def _vm(vmid: int) -> dict:
    return copy.deepcopy(next(v for v in SCENARIO["vms"] if v["vmid"] == vmid))


# --- node_vm_statuses ---------------------------------------------------------------------------------


def test_node_vm_statuses_gives_running_machine_and_qemu_in_one_call(lab):
    rows = reader_for(lab).node_vm_statuses("pve1")
    pve1 = [v for v in SCENARIO["vms"] if v["node"] == "pve1"]
    assert set(rows) == {v["vmid"] for v in pve1}
    for vm in pve1:
        row = rows[vm["vmid"]]
        assert row["status"] == "running"
        assert row["running-machine"] == vm["running_machine"]
        assert row["running-qemu"] == "9.2.0"  # pve1's QEMU
    assert lab.requests() == {"/nodes/pve1/qemu": 1}


def test_a_node_wide_row_makes_the_same_facts_as_status_current(lab):
    reader = reader_for(lab)
    rows = reader.node_vm_statuses("pve1")
    for vmid in (101, 106):
        config = reader.vm_config("pve1", vmid)
        by_row = vm_facts_from("lab", "pve1", vmid, config, rows[vmid])
        alone = vm_facts_from("lab", "pve1", vmid, config, reader.vm_status("pve1", vmid))
        assert by_row.running_machine == alone.running_machine == _vm(vmid)["running_machine"]
        assert (by_row.status, by_row.running_qemu) == (alone.status, alone.running_qemu)


def test_a_stopped_vm_has_no_running_machine(lab):
    rows = reader_for(lab).node_vm_statuses("pve2")
    assert set(rows) == {201}
    assert rows[201]["status"] == "stopped" and "running-machine" not in rows[201]
    facts = vm_facts_from("lab", "pve2", 201, {"cpu": "x86-64-v3"}, rows[201])
    assert (facts.status, facts.running_machine, facts.running_qemu) == ("stopped", "", "")


def test_node_vm_statuses_of_an_offline_node_is_a_guard_error(lab):
    # what VmStatusReader falls back on: a GuardError makes it ask each VM alone
    with pytest.raises(GuardError):
        reader_for(lab).node_vm_statuses("pve5")


# --- migrate_precondition -----------------------------------------------------------------------------


def test_precondition_without_target_answers_every_blocked_node(lab):
    vm = _vm(102)
    vm.update(
        vmid=150,
        name="many-blockers",
        local_resources=["usb1"],
        not_allowed={
            "pve2": {"unavailable_storages": ["local-zfs"]},
            "pve3": {"unavailable-resources": ["usb1"]},
            "pve4": {"blocking-ha-resources": [{"sid": "vm:150", "cause": "resource-affinity"}]},
        },
    )
    lab.put_vm(vm)
    try:
        pre = reader_for(lab).migrate_precondition("pve1", 150)
    finally:
        with lab.state.lock:  # the scenario as it was
            lab.scenario["vms"][:] = [v for v in lab.scenario["vms"] if v["vmid"] != 150]
    assert pre.checked and pre.local_resources == ("usb1",)
    assert pre.by_node == {
        "pve2": (("local-zfs",), ()),
        "pve3": ((), ("usb1",)),
        "pve4": ((), ("HA resource vm:150 (resource-affinity)",)),
    }
    assert lab.requests()["/nodes/pve1/qemu/150/migrate"] == 1
    assert pre.toward("pve2").unavailable_storages == ("local-zfs",)
    assert pre.toward("pve3").unavailable_resources == ("usb1",)
    assert pre.toward("pve4").unavailable_resources == ("HA resource vm:150 (resource-affinity)",)
    free = pre.toward("pve5")
    assert (free.unavailable_storages, free.unavailable_resources, free.by_node) == ((), (), {})
    assert free.checked and free.local_resources == ("usb1",)


def test_toward_narrows_the_answer_to_one_target(lab):
    pre = reader_for(lab).migrate_precondition("pve1", 105)
    assert pre.by_node == {"pve2": ((), ("usb0",))}
    to_pve2, to_pve3 = pre.toward("pve2"), pre.toward("pve3")
    assert to_pve2.unavailable_resources == ("usb0",) and to_pve2.by_node == {}
    assert to_pve3.unavailable_resources == () and to_pve3.unavailable_storages == ()
    assert to_pve2.local_resources == to_pve3.local_resources == ("usb0",)
    # the reader's own target argument gives the same as narrowing the whole answer
    assert reader_for(lab).migrate_precondition("pve1", 105, "pve2") == to_pve2
    assert reader_for(lab).migrate_precondition("pve1", 105, "pve3") == to_pve3


def test_the_precondition_survives_the_cache_codec():
    pre = Precondition(
        checked=True,
        local_resources=("usb0",),
        local_disks=("local-lvm:vm-105-disk-1",),
        by_node={"pve2": (("local-zfs",), ("usb0",)), "pve4": ((), ("HA resource vm:105 (affinity)",))},
    )
    stored = json.loads(json.dumps(PRECONDITION.encode(pre)))
    back = PRECONDITION.decode(stored)
    assert back == pre
    assert back.toward("pve2") == pre.toward("pve2")


def test_token_without_vm_migrate_is_skipped_not_failed():
    scenario = copy.deepcopy(SCENARIO)
    scenario["token"]["privileges"] = ["VM.Audit", "Sys.Audit"]
    with pve_server(scenario) as auditor:
        pre = reader_for(auditor).migrate_precondition("pve1", 105)
        assert auditor.requests() == {"/nodes/pve1/qemu/105/migrate": 1}  # answered 403
    assert pre.checked is False
    assert pre.skipped_reason == (
        "the API token guard@pve!check lacks VM.Migrate, so Proxmox's own storage and local-resource "
        "check was skipped"
    )
    assert pre.toward("pve2") == pre  # nothing to narrow


def test_a_locked_vm_fails_the_precondition_with_proxmoxs_message(lab):
    vm = _vm(103)
    vm["config"]["lock"] = "migrate"
    lab.put_vm(vm)
    try:
        with pytest.raises(ProxmoxError) as err:
            reader_for(lab).migrate_precondition("pve1", 103)
    finally:
        lab.put_vm(_vm(103))
    assert "VM is locked (migrate)" in str(err.value) and "VM 103" in str(err.value)
