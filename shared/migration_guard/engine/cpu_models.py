"""The CPU model catalog: every type a VM's ``cpu:`` may name, with its QEMU features.

Data: ``shared/migration_guard/data/cpu_models.json`` (generated from QEMU over QMP, with QEMU's KVM default
properties and Proxmox's additions applied). Feature names are normalised to canonical QEMU
spellings by :mod:`migration_guard.engine.flags` when the catalog is read (once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from migration_guard.engine.flags import canonical_set
from migration_guard.errors import ConfigError

#: Proxmox's generic types, best first (the ladder every recommendation and suggestion climbs)
GENERIC_LADDER: tuple[str, ...] = ("x86-64-v4", "x86-64-v3", "x86-64-v2-AES", "x86-64-v2", "kvm64")
PASSTHROUGH: frozenset[str] = frozenset({"host", "max"})


@dataclass(frozen=True, slots=True)
class CpuModel:
    name: str
    vendor: str | None  # "intel", "amd" or None (takes the node's vendor)
    features: frozenset[str]  # canonical QEMU names
    source: str = ""
    family: str = ""
    version: int | None = None
    alias_of: str | None = None
    deprecated: bool = False
    passthrough: bool = False
    proxmox_added: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Catalog:
    models: dict[str, CpuModel]
    provenance: dict = field(default_factory=dict)

    def get(self, name: str) -> CpuModel | None:
        return self.models.get(name)

    def resolve(self, name: str) -> CpuModel | None:
        """The model a name means: aliases followed (``Skylake-Server`` -> ``Skylake-Server-v1``)."""
        model = self.models.get(name)
        seen = set()
        while model is not None and model.alias_of and model.alias_of not in seen:
            seen.add(model.alias_of)
            target = self.models.get(model.alias_of)
            if target is None:
                break
            model = target
        if model is not None and model.version is None and not model.alias_of:
            v1 = self.models.get(f"{name}-v1")
            if v1 is not None:
                return v1
        return model

    def names(self) -> list[str]:
        return sorted(self.models)

    def suggest(self, name: str) -> str | None:
        """A known name that differs only in case or separators, for an error message."""
        low = name.lower().replace("_", "-")
        for known in self.models:
            if known.lower().replace("_", "-") == low:
                return known
        return None


def _model(name: str, entry: dict) -> CpuModel:
    vendor = entry.get("vendor")
    if vendor not in ("intel", "amd"):
        vendor = None
    version = entry.get("version")
    return CpuModel(
        name=name,
        vendor=vendor,
        features=canonical_set(entry.get("features") or ()),
        source=str(entry.get("source") or ""),
        family=str(entry.get("family") or ""),
        version=int(version) if isinstance(version, int) else None,
        alias_of=entry.get("alias_of") or None,
        deprecated=bool(entry.get("deprecated", False)),
        passthrough=bool(entry.get("passthrough", False)) or name in PASSTHROUGH,
        proxmox_added=tuple(entry.get("proxmox_added") or ()),
    )


def load_catalog(text: str) -> Catalog:
    """Build a catalog from the JSON text of ``cpu_models.json``. Raises ConfigError."""
    try:
        data = json.loads(text)
        models = {name: _model(name, entry) for name, entry in data["models"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"the CPU model catalog cannot be read ({exc}); reinstall the package") from exc
    for name in PASSTHROUGH:
        models.setdefault(
            name,
            CpuModel(
                name=name,
                vendor=None,
                features=frozenset(),
                source="Proxmox: passes the node's CPU through",
                passthrough=True,
            ),
        )
    return Catalog(models=models, provenance=dict(data.get("provenance") or {}))


@cache
def catalog() -> Catalog:
    """The packaged catalog (read once). Raises ConfigError when the data file is missing."""
    try:
        text = resources.files("migration_guard").joinpath("data/cpu_models.json").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as exc:
        raise ConfigError(
            "the CPU model catalog shared/migration_guard/data/cpu_models.json is missing; reinstall the "
            "package"
        ) from exc
    return load_catalog(text)
