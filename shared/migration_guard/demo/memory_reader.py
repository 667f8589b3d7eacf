"""An in-memory cluster reader over a scenario (the shape of ``tests/fixtures/service/scenario.json``):
no Proxmox, no HTTP; for tests and benchmarks that measure the service, not the network."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

from migration_guard.cluster.reader import CallStats, vm_facts_from
from migration_guard.engine.facts import NodeFacts, Precondition, VmSummary
from migration_guard.engine.hosts import host_from_proxmox
from migration_guard.errors import ProxmoxUnreachable, UnknownNodeError, UnknownVmError


class MemoryReader:
    """The ClusterReader's interface over a scenario held in memory, with call counts and
    settable faults (``delay``, ``error``): the reader of tests and benchmarks."""

    def __init__(self, scenario: dict, name: str = "lab") -> None:
        self.name = name
        self.scenario = json.loads(json.dumps(scenario))
        self.stats = CallStats()
        self.calls: Counter[str] = Counter()
        self.delay = 0.0
        self.error: Exception | None = None
        self.lock = threading.Lock()
        self.drop_flags: set[str] = set()
        self.no_migrate = False
        self._index: dict = {}
        self._index_of: tuple[int, int] = (0, -1)

    def _enter(self, kind: str) -> None:
        with self.lock:
            self.calls[kind] += 1
        self.stats.record(kind)
        if self.delay:
            time.sleep(self.delay)
        if self.error is not None:
            raise self.error

    def _node(self, name):
        return next((n for n in self.scenario["nodes"] if n["name"] == name), None)

    def nodes(self):
        self._enter("nodes")
        return [NodeFacts(self.name, n["name"], n.get("online", True)) for n in self.scenario["nodes"]]

    def cluster_cpu_flags(self):
        self._enter("cpu-flags")
        return None

    def node_facts(self, name, qemu_flags=None):
        self._enter("node")
        node = self._node(name)
        if node is None:
            raise UnknownNodeError(f"cluster {self.name} has no node {name}")
        if not node.get("online", True):
            raise ProxmoxUnreachable(f"Proxmox could not reach the node {name}")
        cpu = node["cpu"]
        host = (
            None
            if name in self.drop_flags
            else host_from_proxmox(name, {"model": cpu["model"], "flags": " ".join(cpu["flags"])})
        )
        return NodeFacts(
            self.name,
            name,
            True,
            cpu["model"],
            host,
            "cpuinfo" if host else "none",
            "9.2.1",
            "6.14",
            node.get("qemu_version", "9.2.0"),
            (),
            time.time(),
        )

    def vms(self):
        self._enter("vms")
        return [
            VmSummary(
                self.name,
                v["vmid"],
                v["node"],
                v["status"],
                v["name"],
                tuple(v.get("tags", "").split(";")) if v.get("tags") else (),
            )
            for v in self.scenario["vms"]
        ]

    def _by_vmid(self) -> dict:
        """vmid -> its scenario rows, rebuilt when the list was replaced or changed length (a
        test may add or drop VMs): a lookup, not a scan of 10,000 rows per VM read."""
        rows = self.scenario["vms"]
        if self._index_of != (id(rows), len(rows)):
            index: dict = {}
            for v in rows:
                index.setdefault(v["vmid"], []).append(v)
            self._index, self._index_of = index, (id(rows), len(rows))
        return self._index

    def _vm(self, node, vmid):
        vm = next((v for v in self._by_vmid().get(vmid, ()) if v["node"] == node), None)
        if vm is None:
            raise UnknownVmError(f"VM {vmid} is not on node {node} of cluster {self.name}")
        return vm

    def vm_config(self, node, vmid):
        self._enter("vm")
        vm = self._vm(node, vmid)
        config = {"name": vm["name"]}
        config.update(vm.get("config", {}))
        if vm.get("tags"):
            config.setdefault("tags", vm["tags"])
        return config

    @staticmethod
    def _status_of(vm):
        answer = {"vmid": vm["vmid"], "status": vm["status"], "name": vm["name"]}
        if vm["status"] == "running":
            answer["running-machine"] = vm.get("running_machine", "")
        return answer

    def vm_status(self, node, vmid):
        self._enter("vm-status")
        return self._status_of(self._vm(node, vmid))

    def node_vm_statuses(self, node):
        self._enter("node-vms")
        return {v["vmid"]: self._status_of(v) for v in self.scenario["vms"] if v["node"] == node}

    def vm_facts(self, node, vmid, summary=None):
        return vm_facts_from(self.name, node, vmid, self.vm_config(node, vmid), self.vm_status(node, vmid))

    def migrate_precondition(self, node, vmid, target=None):
        self._enter("precondition")
        if self.no_migrate:
            return Precondition(
                checked=False,
                skipped_reason="the API token guard@pve!check lacks VM.Migrate, so "
                "Proxmox's own storage and local-resource check was skipped",
            )
        vm = self._by_vmid()[vmid][0]
        by_node = {
            name: ((), tuple(blockers.get("unavailable-resources", ())))
            for name, blockers in vm.get("not_allowed", {}).items()
        }
        pre = Precondition(True, local_resources=tuple(vm.get("local_resources", ())), by_node=by_node)
        return pre.toward(target) if target else pre
