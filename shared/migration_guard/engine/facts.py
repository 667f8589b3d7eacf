"""What the service knows about a cluster: plain, slotted data read by
shared/migration_guard/cluster/reader.py.

CONTRACT between the cluster reader (cluster/reader.py) and the service (checks, cache, API).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from migration_guard.engine.hosts import HostCpu


@dataclass(frozen=True, slots=True)
class NodeFacts:
    cluster: str
    name: str
    online: bool
    cpu_model: str = ""
    #: None when the node is offline or its status lacks cpuinfo.flags
    cpu: HostCpu | None = None
    #: "qemu-kvm" (/cluster/qemu/cpu-flags) or "cpuinfo" (/nodes/{node}/status) or "none"
    flag_source: str = "none"
    pve_version: str = ""
    kernel_version: str = ""
    qemu_version: str = ""
    #: machine types the node's QEMU offers, e.g. ("pc-q35-9.0", "pc-i440fx-9.0", ...)
    machines: tuple[str, ...] = ()
    fetched_at: float = 0.0
    #: the cpu: types the node's Proxmox accepts (its /capabilities/qemu/cpu list), () when unknown
    cpu_types: tuple[str, ...] = ()
    #: "node" (the node's own list) or "" (not read: migration_guard.engine.pve_versions falls back to release
    # data)
    cpu_types_source: str = ""


@dataclass(frozen=True, slots=True)
class VmSummary:
    """One row of /cluster/resources?type=vm."""

    cluster: str
    vmid: int
    node: str
    status: str
    name: str = ""
    tags: tuple[str, ...] = ()
    template: bool = False


@dataclass(frozen=True, slots=True)
class VmFacts:
    cluster: str
    vmid: int
    node: str
    status: str
    name: str = ""
    tags: tuple[str, ...] = ()
    #: the raw cpu: value, "" when the config has no cpu line
    cpu: str = ""
    #: the cpu value a pending change sets ("" = the line is deleted: kvm64), None when no cpu
    #: change is pending. A running VM keeps ``cpu`` until its next reboot (a live migration starts
    #: the target with ``cpu``); a stopped one starts with the pending value.
    pending_cpu: str | None = None
    machine: str = ""
    hookscript: str = ""
    lock: str = ""
    running_machine: str = ""
    running_qemu: str = ""
    smbios_uuid: str = ""
    vmgenid: str = ""
    fetched_at: float = 0.0
    #: the cluster's custom CPU models (cpu-models.conf text) when the VM's cpu names one
    #: (``custom-NAME``), read with the VM; None when not read (such a type is then not judged)
    custom_conf: str | None = None


@dataclass(frozen=True, slots=True)
class Precondition:
    """Proxmox's own migrate precondition check for one VM: for every other node (``by_node``),
    or for one target (``toward(target)``: what ``checks.evaluate`` reads)."""

    checked: bool
    #: why it was not checked (e.g. the token lacks VM.Migrate), "" when checked
    skipped_reason: str = ""
    local_disks: tuple[str, ...] = ()
    local_resources: tuple[str, ...] = ()
    unavailable_storages: tuple[str, ...] = ()
    unavailable_resources: tuple[str, ...] = ()
    extra: dict[str, object] = field(default_factory=dict)
    #: node -> (unavailable storages, unavailable resources and blocking HA rules), blocked nodes only
    by_node: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)

    def toward(self, target: str) -> Precondition:
        """The answer for one target node."""
        if not self.checked:
            return self
        storages, resources = self.by_node.get(target, ((), ()))
        return replace(self, unavailable_storages=storages, unavailable_resources=resources, by_node={})
