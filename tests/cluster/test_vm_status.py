"""VmStatusReader: a VM's status read alone, or, when many VMs of one node are asked together, from
one node-wide ``GET /nodes/{node}/qemu?full=1`` shared by all of them and reused for ``reuse_s``.

The reader below answers like Proxmox (status/current per VM, the node-wide list per node) and
counts every call; ``run`` awaits a little before each call, so concurrent asks overlap the way
Proxmox round trips do. The last tests drive the same through GuardService and the FakeReader of
tests/api/test_api.py (whose counts are ``reader.calls``).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from migration_guard.cluster.vm_status import VmStatusReader
from migration_guard.errors import ProxmoxError, ProxmoxUnreachable, UnknownVmError
from tests.fakes.clock import Clock
from tests.fakes.service import FakeReader, make_service

#: node -> vmid -> (status, running machine)
CLUSTER = {
    "pve1": {
        101: ("running", "pc-q35-8.1+pve0"),
        102: ("running", "pc-q35-9.2+pve0"),
        103: ("stopped", ""),
        104: ("running", "pc-i440fx-9.0+pve0"),
        105: ("running", "pc-q35-8.1+pve0"),
        106: ("running", "pc-q35-8.1+pve0"),
    },
    "pve2": {201: ("running", "pc-q35-9.2+pve0"), 202: ("stopped", "")},
}


def _row(vmid: int, status: str, machine: str) -> dict:
    row: dict = {"vmid": vmid, "status": status, "name": f"vm{vmid}"}
    if status == "running":
        row["running-machine"] = machine
        row["running-qemu"] = "9.2.0"
    return row


class ScriptedReader:
    """status/current and the node-wide list over CLUSTER, with counts per call."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.vm_calls: Counter[int] = Counter()
        #: vmids the node-wide answer leaves out (e.g. a VM that arrived after the list was made)
        self.hidden: set[int] = set()
        self.node_error: Exception | None = None

    def vm_status(self, node: str, vmid: int) -> dict:
        self.calls["status/current"] += 1
        self.vm_calls[vmid] += 1
        vm = CLUSTER.get(node, {}).get(vmid)
        if vm is None:
            raise UnknownVmError(f"VM {vmid} is not on node {node} of cluster lab")
        return _row(vmid, *vm)

    def node_vm_statuses(self, node: str) -> dict[int, dict]:
        self.calls[f"node-wide {node}"] += 1
        if self.node_error is not None:
            raise self.node_error
        return {
            vmid: _row(vmid, *vm) for vmid, vm in CLUSTER.get(node, {}).items() if vmid not in self.hidden
        }


def make(reuse_s: float = 2.5, latency_s: float = 0.02) -> tuple[VmStatusReader, ScriptedReader, Clock]:
    reader = ScriptedReader()
    clock = Clock(1000.0)

    async def run(fn, *args):
        await asyncio.sleep(latency_s)  # one Proxmox round trip
        return fn(*args)

    return VmStatusReader(run, reader, reuse_s=reuse_s, clock=clock), reader, clock


def expected(node: str, vmid: int) -> dict:
    return _row(vmid, *CLUSTER[node][vmid])


# --- one VM, many VMs -------------------------------------------------------------------------------


def test_a_single_vm_is_read_alone_with_status_current():
    statuses, reader, _ = make()
    got = asyncio.run(statuses.status("pve1", 101))
    assert got == expected("pve1", 101)
    assert reader.calls == Counter({"status/current": 1})
    assert statuses.node_reads == 0


def test_vms_asked_one_after_another_are_each_read_alone():
    statuses, reader, _ = make()

    async def one_by_one():
        return [await statuses.status("pve1", vmid) for vmid in (101, 102, 103)]

    assert asyncio.run(one_by_one()) == [expected("pve1", v) for v in (101, 102, 103)]
    assert reader.calls == Counter({"status/current": 3})


@pytest.mark.parametrize("n", [2, 6, 60])
def test_concurrent_vms_of_one_node_share_one_node_wide_read(n):
    statuses, reader, _ = make()
    vmids = [sorted(CLUSTER["pve1"])[i % 6] for i in range(n)]

    async def burst():
        return await asyncio.gather(*(statuses.status("pve1", vmid) for vmid in vmids))

    got = asyncio.run(burst())
    assert got == [expected("pve1", v) for v in vmids]
    assert reader.calls["node-wide pve1"] == 1
    assert reader.calls["status/current"] <= 1
    assert sum(reader.calls.values()) <= 2
    assert statuses.node_reads == 1


def test_vms_of_different_nodes_asked_together_are_each_read_alone():
    statuses, reader, _ = make()

    async def together():
        return await asyncio.gather(statuses.status("pve1", 101), statuses.status("pve2", 201))

    assert asyncio.run(together()) == [expected("pve1", 101), expected("pve2", 201)]
    assert reader.calls == Counter({"status/current": 2})


def test_a_vm_missing_from_the_node_wide_answer_is_read_alone():
    statuses, reader, _ = make()
    reader.hidden = {105}

    async def burst():
        return await asyncio.gather(*(statuses.status("pve1", v) for v in (101, 102, 105, 106)))

    got = asyncio.run(burst())
    assert got == [expected("pve1", v) for v in (101, 102, 105, 106)]
    assert reader.calls["node-wide pve1"] == 1
    # 101 was the first (alone); 105 was not in the node-wide answer: its own call
    assert reader.vm_calls == Counter({101: 1, 105: 1})


def test_an_unknown_vm_in_a_burst_still_raises_unknown_vm():
    statuses, reader, _ = make()

    async def burst():
        return await asyncio.gather(
            *(statuses.status("pve1", v) for v in (101, 999, 102, 103)), return_exceptions=True
        )

    got = asyncio.run(burst())
    assert isinstance(got[1], UnknownVmError) and "VM 999" in str(got[1])
    assert [got[0], got[2], got[3]] == [expected("pve1", v) for v in (101, 102, 103)]
    assert reader.calls["node-wide pve1"] == 1
    assert reader.vm_calls == Counter({101: 1, 999: 1})


def test_a_failing_node_wide_read_falls_back_to_one_read_per_vm():
    statuses, reader, _ = make()
    reader.node_error = ProxmoxUnreachable("Proxmox could not reach the node for the VM list of node pve1")
    vmids = [101, 102, 103, 104]

    async def burst():
        return await asyncio.gather(*(statuses.status("pve1", v) for v in vmids))

    assert asyncio.run(burst()) == [expected("pve1", v) for v in vmids]
    assert reader.calls["node-wide pve1"] == 1
    assert reader.vm_calls == Counter({v: 1 for v in vmids})


def test_a_failed_node_wide_read_is_not_reused():
    statuses, reader, clock = make()
    reader.node_error = ProxmoxError("Proxmox at 127.0.0.1:8006 failed the VM list of node pve1 (500)")

    async def burst():
        return await asyncio.gather(*(statuses.status("pve1", v) for v in (101, 102)))

    asyncio.run(burst())
    reader.node_error = None
    reader.calls.clear()
    clock.now += 0.1
    assert asyncio.run(statuses.status("pve1", 102)) == expected("pve1", 102)
    assert reader.calls == Counter({"status/current": 1})


# --- reuse within reuse_s -----------------------------------------------------------------------------


def test_the_node_wide_answer_serves_later_vms_within_reuse_s_and_not_after():
    statuses, reader, clock = make(reuse_s=2.5)

    async def burst():
        await asyncio.gather(*(statuses.status("pve1", v) for v in (101, 102)))

    asyncio.run(burst())
    assert reader.calls == Counter({"status/current": 1, "node-wide pve1": 1})
    reader.calls.clear()

    clock.now += 2.4  # 106 was not asked in the burst, but the node-wide answer has it
    assert asyncio.run(statuses.status("pve1", 106)) == expected("pve1", 106)
    assert asyncio.run(statuses.status("pve1", 102)) == expected("pve1", 102)
    assert reader.calls == Counter()

    clock.now += 0.2  # 2.6 s after the node-wide read: read again
    assert asyncio.run(statuses.status("pve1", 106)) == expected("pve1", 106)
    assert reader.calls == Counter({"status/current": 1})


def test_the_reused_answer_is_for_its_own_node_only():
    statuses, reader, _ = make()

    async def burst():
        await asyncio.gather(*(statuses.status("pve1", v) for v in (101, 102)))

    asyncio.run(burst())
    reader.calls.clear()
    assert asyncio.run(statuses.status("pve2", 201)) == expected("pve2", 201)
    assert reader.calls == Counter({"status/current": 1})


# --- through the service (FakeReader of tests/api/test_api.py) -------------------------------------------


def test_service_burst_of_vm_facts_makes_one_node_wide_call():
    reader = FakeReader()
    reader.delay = 0.03  # Proxmox round trips overlap, as in a real burst
    service = make_service(reader)
    vmids = [101, 102, 103, 104, 105, 106]

    async def burst():
        try:
            return await asyncio.gather(*(service.vm("pve1", vmids[i % 6]) for i in range(120)))
        finally:
            await service.close()

    got = asyncio.run(burst())
    assert [facts.vmid for facts, _ in got] == [vmids[i % 6] for i in range(120)]
    assert all(facts.status == "running" and facts.running_machine for facts, _ in got)
    assert reader.calls["node-vms"] == 1
    assert reader.calls["vm-status"] <= 1
    assert reader.calls["vm"] == len(vmids)  # each VM's config once


def test_service_single_vm_reads_status_current_not_the_node():
    reader = FakeReader()
    service = make_service(reader)

    async def one():
        try:
            return await service.vm("pve2", 201)
        finally:
            await service.close()

    facts, _ = asyncio.run(one())
    assert (facts.vmid, facts.node, facts.status, facts.running_machine) == (201, "pve2", "stopped", "")
    assert (reader.calls["vm"], reader.calls["vm-status"], reader.calls["node-vms"]) == (1, 1, 0)


def test_service_unknown_vm_in_a_burst_is_unknown_and_others_answer():
    reader = FakeReader()
    reader.delay = 0.03
    service = make_service(reader)

    async def burst():
        try:
            return await asyncio.gather(
                *(service.vm("pve1", v) for v in (101, 999, 102, 103)), return_exceptions=True
            )
        finally:
            await service.close()

    got = asyncio.run(burst())
    assert isinstance(got[1], UnknownVmError)
    assert [g[0].vmid for i, g in enumerate(got) if i != 1] == [101, 102, 103]
    assert reader.calls["node-vms"] == 1
