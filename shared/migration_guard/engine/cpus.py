"""The real CPUs the project ships (``data/cpus/*.json``: first processor of a public
/proc/cpuinfo dump each), by a short name an operator types: ``EPYC 9654``, ``Xeon Gold 6230``,
``Atom C3758``. A what-if question adds an imagined node with one of them.

Each entry's best x86-64-vN level is what the engine judges the dump able to run (its cpuinfo
flags through the KVM rules, as a node without a KVM report is judged)."""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from migration_guard.engine.cpu_spec import CpuSpec
from migration_guard.engine.hosts import HostCpu, host_from_json
from migration_guard.engine.runnable import check_runnable
from migration_guard.errors import ConfigError, HostDataError, InputError

#: the x86-64-vN levels, best first (Proxmox's types; x86-64-v1 is what every x86-64 CPU runs)
LEVELS = ("x86-64-v4", "x86-64-v3", "x86-64-v2-AES", "x86-64-v2")

#: words of a /proc/cpuinfo model name that are no part of what an operator calls the CPU
_NOISE = re.compile(
    r"\((?:R|TM|tm|r)\)|\bCPU\b|\bProcessor\b|\b[\w]+-Core\b|@\s*[\d.]+\s*GHz|\b\d+(?:th|rd|nd|st) Gen\b"
)
#: the vendor in front, and the " 0" Intel put after the first Xeon E5 parts (E5-2680 0)
_EDGES = re.compile(r"^(?:AMD|Intel)\s+|\s+0$")


@dataclass(frozen=True, slots=True)
class ShippedCpu:
    id: str  # the file name without .json: intel-cascadelake-sp-gold-6230
    name: str  # what an operator types: Xeon Gold 6230
    model_name: str  # /proc/cpuinfo's model name
    vendor: str  # intel | amd | unknown
    family: int | None
    model: int | None
    level: str  # the best x86-64-vN level it runs, "x86-64-v1" when none of Proxmox's
    source: str
    note: str
    host: HostCpu  # named after ``name``

    def as_dict(self) -> dict:
        """As ``GET /v1/cpus`` lists it."""
        return {
            "name": self.name,
            "id": self.id,
            "model_name": self.model_name,
            "vendor": self.vendor,
            "family": self.family,
            "model": self.model,
            "level": self.level,
            "source": self.source,
            "note": self.note,
        }

    def as_node(self, node: str) -> HostCpu:
        """The CPU as an imagined node called ``node``."""
        return dataclasses.replace(self.host, name=node)


def short_name(model_name: str) -> str:
    """``AMD EPYC 9654 96-Core Processor`` -> ``EPYC 9654``; ``Intel(R) Xeon(R) Gold 6230 CPU @
    2.10GHz`` -> ``Xeon Gold 6230``; ``Intel(R) Xeon(R) CPU E5-2680 0 @ 2.70GHz`` -> ``Xeon E5-2680``."""
    text = " ".join(_NOISE.sub(" ", model_name).split())
    return _EDGES.sub("", text)


def best_level(host: HostCpu) -> str:
    for level in LEVELS:
        if check_runnable(CpuSpec(raw=level, cputype=level), host).runnable:
            return level
    return "x86-64-v1"


def _entry(ident: str, raw: dict) -> tuple[str, dict]:
    model_name = raw.get("model_name")
    if not isinstance(model_name, str) or not model_name.strip():
        raise ConfigError(f"shared/migration_guard/data/cpus/{ident}.json has no model_name")
    return short_name(model_name), raw


def _unique_names(entries: list[tuple[str, str, dict]]) -> list[tuple[str, str, dict]]:
    """Two dumps of the same part (``gold-6230`` and ``gold-6230-notsx``) differ by what their file
    names add to the shortest of them: ``Xeon Gold 6230`` and ``Xeon Gold 6230 notsx``."""
    by_name: dict[str, list[str]] = {}
    for ident, name, _raw in entries:
        by_name.setdefault(name.lower(), []).append(ident)
    out = []
    for ident, name, raw in entries:
        twins = by_name[name.lower()]
        if len(twins) > 1:
            base = min(twins, key=len)
            extra = ident[len(base) :].strip("-").replace("-", " ") if ident.startswith(base) else ident
            name = f"{name} {extra}".strip()
        out.append((ident, name, raw))
    return out


@cache
def shipped_cpus() -> tuple[ShippedCpu, ...]:
    """Every shipped CPU, sorted by vendor then name (read once)."""
    folder = resources.files("migration_guard").joinpath("data", "cpus")
    raw_entries: list[tuple[str, str, dict]] = []
    try:
        files = sorted((f for f in folder.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
        for f in files:
            ident = f.name[: -len(".json")]
            name, raw = _entry(ident, json.loads(f.read_text(encoding="utf-8")))
            raw_entries.append((ident, name, raw))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"the shipped CPUs (shared/migration_guard/data/cpus/) cannot be read: {exc}"
        ) from exc
    out = []
    for ident, name, raw in _unique_names(raw_entries):
        try:
            host = host_from_json({**raw, "name": name}, name)
        except HostDataError as exc:
            raise ConfigError(f"shared/migration_guard/data/cpus/{ident}.json: {exc}") from exc
        out.append(
            ShippedCpu(
                id=ident,
                name=name,
                model_name=str(raw["model_name"]),
                vendor=host.vendor,
                family=host.family,
                model=host.model_number,
                level=best_level(host),
                source=str(raw.get("source", "")),
                note=str(raw.get("note", "")),
                host=host,
            )
        )
    return tuple(sorted(out, key=lambda c: (c.vendor, c.name.lower())))


def _key(text: str) -> str:
    return " ".join(text.lower().replace("-", " ").split())


def find_cpu(text: str) -> ShippedCpu:
    """The shipped CPU named ``text`` (its name or file name, any case; ``Intel``/``AMD`` and
    ``(R)`` may be there); InputError naming the close names otherwise."""
    wanted = _key(short_name(text)) or _key(text)
    cpus = shipped_cpus()
    for cpu in cpus:
        if wanted in (_key(cpu.name), _key(cpu.id)):
            return cpu
    # a part number alone ("9654", "C3758", "gold 6230") when it names one CPU
    partial = [c for c in cpus if re.search(rf"(?:^| ){re.escape(wanted)}(?: |$)", _key(c.name))]
    if len(partial) == 1:
        return partial[0]
    names = [c.name for c in cpus]
    close = difflib.get_close_matches(short_name(text), names, n=5, cutoff=0.5)
    close = list(dict.fromkeys([c.name for c in partial] + close))[:6]
    hint = (
        f"close names: {', '.join(close)}"
        if close
        else "GET /v1/cpus (or migration-guard cpu list) lists them"
    )
    raise InputError(f"no shipped CPU is called {text[:60]!r}; {hint}", code="unknown-cpu")


__all__ = ["LEVELS", "ShippedCpu", "best_level", "find_cpu", "shipped_cpus", "short_name"]
