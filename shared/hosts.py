"""A node's CPU as the engine sees it, and the readers that build one from
/proc/cpuinfo text, the CLI's JSON host files, the Proxmox node status and
Proxmox's ``/cluster/qemu/cpu-flags``.

CONTRACT (other modules rely on these names; the engine owner fills in the bodies).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Vendor = Literal["intel", "amd", "unknown"]
#: "cpuinfo": Linux /proc/cpuinfo flag names, judged by the engine's KVM rules.
#: "qemu-kvm": QEMU feature names from QEMU's own KVM host expansion (exact).
FlagSource = Literal["cpuinfo", "qemu-kvm"]


@dataclass(frozen=True, slots=True)
class HostCpu:
    name: str
    vendor: Vendor
    model: str
    flags: frozenset[str]
    flag_source: FlagSource = "cpuinfo"
    #: the /proc/cpuinfo ``bugs:`` words, None when the input had no bugs line
    bugs: frozenset[str] | None = None
    family: int | None = None
    model_number: int | None = None


def host_from_cpuinfo_text(text: str, name: str) -> HostCpu:
    """First processor of a /proc/cpuinfo dump. Raises HostDataError."""
    raise NotImplementedError


def host_from_json(obj: object, default_name: str) -> HostCpu:
    """``{"name", "vendor", "model", "flags": [...] | "a b c", "bugs"?}``. Raises HostDataError."""
    raise NotImplementedError


def host_from_proxmox(name: str, cpuinfo: dict) -> HostCpu:
    """From ``GET /nodes/{node}/status``'s ``cpuinfo`` (``model``, ``flags`` space separated;
    no vendor_id: the vendor comes from the model string and flags). Raises HostDataError
    when ``flags`` is missing."""
    raise NotImplementedError


def host_from_qemu_flags(name: str, model: str, qemu_flags: Iterable[str], vendor: Vendor | None = None) -> HostCpu:
    """From ``GET /cluster/qemu/cpu-flags`` (QEMU names offered by that node's KVM)."""
    raise NotImplementedError


def load_host_file(path: str) -> HostCpu:
    """A /proc/cpuinfo text or a JSON host file; ``-`` reads stdin. Raises HostDataError."""
    raise NotImplementedError
