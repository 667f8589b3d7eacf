"""Parser for a VM's Proxmox ``cpu:`` value and for ``/etc/pve/virtual-guest/cpu-models.conf``.

CONTRACT (other modules rely on these names; the engine owner fills in the bodies).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CustomModel:
    name: str                       # without the "custom-" prefix
    reported_model: str             # the QEMU model it builds on (default kvm64)
    flags: tuple[tuple[str, bool], ...] = ()
    phys_bits: str | None = None
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class CpuSpec:
    raw: str                        # the value as written ("" for no cpu: line)
    cputype: str                    # e.g. "kvm64", "host", "x86-64-v2-AES", "Skylake-Server-v4", "custom-foo"
    flags: tuple[tuple[str, bool], ...] = ()   # (canonical QEMU feature name, True for +)
    hidden: bool = False
    hv_vendor_id: str | None = None
    phys_bits: str | None = None
    guest_phys_bits: int | None = None
    reported_model: str | None = None
    custom: CustomModel | None = None

    @property
    def is_passthrough(self) -> bool:
        return self.cputype in ("host", "max")


def parse_cpu(value: str | None, custom_models: dict[str, CustomModel] | None = None) -> CpuSpec:
    """Parse a ``cpu:`` value (None/"" means kvm64). Raises CpuSpecError naming the bad part."""
    raise NotImplementedError


def parse_custom_models(text: str) -> dict[str, CustomModel]:
    """Parse the cpu-models.conf format. Raises CpuSpecError."""
    raise NotImplementedError
