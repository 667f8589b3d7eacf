"""Which Proxmox each node runs, and which ``cpu:`` types that Proxmox accepts.

qemu-server accepts a fixed set of CPU type names per release (``PVE/QemuServer/CPUConfig.pm``,
``validate_vm_cpu_conf``: any other name dies "Built-in cputype '...' is not defined (missing
'custom-' prefix?)"). A node says which ones through ``GET /nodes/{node}/capabilities/qemu/cpu``
(qemu-server ``PVE/API2/Qemu/CPU.pm``, since qemu-server 6.2-1: built-in, Proxmox's own and custom
models). Where a node does not answer that, the types of its release come from
``data/qemu_server_cpu_types.json`` (read from CPUConfig.pm per qemu-server release by
``tools/generate_qemu_server_cpu_types.py``).

Names: QEMU's versioned names (``Broadwell-v4``) and its legacy alias names
(``Broadwell-noTSX-IBRS``) mean one model (``alias_of`` in ``data/cpu_models.json``, from QEMU's
``query-cpu-definitions``, i.e. the ``.alias`` of the versions tables in ``target/i386/cpu.c``).
Proxmox VE 7 and 8 accept only the names of their list, mostly the legacy ones; from Proxmox VE 9
(qemu-server 9.1.13 with a pve-qemu-kvm that ships ``/usr/share/kvm/cpu-models-x86_64.json``)
every QEMU name. ``Namer`` spells a model as every node involved accepts it.

Pure data functions: no I/O except reading the packaged data file once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

from migration_guard.engine import cpu_models
from migration_guard.engine.facts import NodeFacts
from migration_guard.errors import ConfigError

#: where a node's type list came from
FROM_NODE = "node"  # /nodes/{node}/capabilities/qemu/cpu
FROM_RELEASE = "release-data"  # data/qemu_server_cpu_types.json by the node's Proxmox release


@dataclass(frozen=True, slots=True)
class Release:
    """One run of qemu-server releases with the same type list."""

    first: str
    last: str
    qemu_list: bool  # reads pve-qemu-kvm's cpu-models-x86_64.json when present
    types: frozenset[str]
    source: str


@lru_cache(maxsize=1024)  # a cluster has a handful of versions, asked about for every verdict
def version_tuple(text: str) -> tuple[int, ...]:
    """``8.0.4`` / ``7.2-4`` / ``9.2.11`` -> numbers; non-digits end a part; () for nothing."""
    out = []
    for part in re.split(r"[.\-]", text.strip()):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        out.append(int(digits.group()))
    return tuple(out)


def release_of(pve_version: str) -> str:
    """``8.4.1`` -> ``8.4``; "" when unknown."""
    parts = version_tuple(pve_version)
    return ".".join(str(p) for p in parts[:2]) if len(parts) >= 2 else ""


def major_of(pve_version: str) -> int | None:
    parts = version_tuple(pve_version)
    return parts[0] if parts else None


@cache
def releases() -> tuple[Release, ...]:
    """The packaged qemu-server release data (read once). Raises ConfigError."""
    try:
        path = resources.files("migration_guard").joinpath("data/qemu_server_cpu_types.json")
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        rows = tuple(
            Release(
                first=str(r["from"]),
                last=str(r["until"]),
                qemu_list=bool(r.get("qemu_list")),
                types=frozenset(r["types"]),
                source=str(r.get("source") or ""),
            )
            for r in data["releases"]
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"shared/migration_guard/data/qemu_server_cpu_types.json cannot be read ({exc}); reinstall the "
            f"package"
        ) from exc
    return tuple(sorted(rows, key=lambda r: version_tuple(r.first)))


def _qemu_names() -> frozenset[str]:
    """Every QEMU model name the catalog knows (versions and aliases): what a list read from
    pve-qemu-kvm's cpu-models-x86_64.json may hold."""
    return frozenset(cpu_models.catalog().models)


def _releases_for(pve_version: str) -> list[Release]:
    """The runs of qemu-server releases a node of this Proxmox release X.Y may run: those that
    started no later than X.Y and were still current at X.Y (qemu-server's version follows the
    Proxmox release it ships with); else every run of that major that started by X.Y."""
    major = major_of(pve_version)
    rel = version_tuple(release_of(pve_version))
    if major is None or not rel:
        return []
    started = [
        r for r in releases() if version_tuple(r.last)[:1] >= (major,) and version_tuple(r.first)[:2] <= rel
    ]
    current = [r for r in started if version_tuple(r.last)[:2] >= rel]
    return current or started


def types_of_release(pve_version: str) -> tuple[frozenset[str], frozenset[str]]:
    """(types every qemu-server of that Proxmox release accepts, types some of them may accept)."""
    rows = _releases_for(pve_version)
    if not rows:
        return frozenset(), frozenset()
    sure = frozenset.intersection(*(r.types for r in rows))
    maybe = frozenset.union(*(r.types for r in rows))
    if any(r.qemu_list for r in rows):
        maybe |= _qemu_names()
    # the newer releases of the same major may be installed too
    later = [r for r in releases() if version_tuple(r.first)[:1] == version_tuple(pve_version)[:1]]
    for r in later:
        maybe |= r.types | (_qemu_names() if r.qemu_list else frozenset())
    return sure, maybe


def first_release_with(name: str) -> tuple[str, bool] | None:
    """(the first qemu-server release from which on every release accepts ``name``, whether only
    through pve-qemu-kvm's model list); None when the newest release does not accept it."""
    found: tuple[str, bool] | None = None
    for r in reversed(releases()):
        if name in r.types:
            found = (r.first, False)
        elif r.qemu_list and name in _qemu_names():
            found = (r.first, True)
        else:
            break
    return found


@dataclass(frozen=True, slots=True)
class Accepts:
    """What one node's Proxmox accepts as a ``cpu:`` type."""

    node: str
    sure: frozenset[str]
    maybe: frozenset[str]
    source: str  # FROM_NODE, FROM_RELEASE or "" (nothing known: every name passes)
    pve_version: str = ""

    @property
    def known(self) -> bool:
        return bool(self.source)

    def accepts(self, name: str) -> bool | None:
        """True, False, or None (cannot tell)."""
        if not self.known:
            return None
        if name in self.sure:
            return True
        if self.source == FROM_NODE or name not in self.maybe:
            return False
        return None


_ACCEPTS: dict[int, tuple[NodeFacts, Accepts]] = {}


def accepts_of(node: NodeFacts) -> Accepts:
    """What ``node`` accepts, from its own list or its release's data (cached per facts object:
    the service keeps unchanged facts as one object)."""
    hit = _ACCEPTS.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    found = _accepts_of(node)
    if len(_ACCEPTS) > 4096:
        _ACCEPTS.clear()
    _ACCEPTS[id(node)] = (node, found)
    return found


def _accepts_of(node: NodeFacts) -> Accepts:
    if node.cpu_types_source == FROM_NODE and node.cpu_types:
        names = frozenset(node.cpu_types)
        return Accepts(node.name, names, names, FROM_NODE, node.pve_version)
    if node.pve_version:
        try:
            sure, maybe = types_of_release(node.pve_version)
        except ConfigError:
            return Accepts(node.name, frozenset(), frozenset(), "", node.pve_version)
        if sure:
            return Accepts(node.name, sure, maybe, FROM_RELEASE, node.pve_version)
    return Accepts(node.name, frozenset(), frozenset(), "", node.pve_version)


_SPELLINGS: dict[tuple[str, int], tuple[str, ...]] = {}


def spellings(name: str) -> tuple[str, ...]:
    """Every name of the model ``name`` means, best spelling first: the name itself, then QEMU's
    legacy alias names (``Broadwell-noTSX-IBRS``), then the versioned one (``Broadwell-v4``)."""
    cat = cpu_models.catalog()
    key = (name, id(cat))
    hit = _SPELLINGS.get(key)
    if hit is None:
        if len(_SPELLINGS) > 4096:
            _SPELLINGS.clear()
        hit = _SPELLINGS[key] = _spellings(name, cat)
    return hit


def _spellings(name: str, cat: cpu_models.Catalog) -> tuple[str, ...]:
    target = cat.resolve(name)
    if target is None:
        return (name,)
    same = [n for n in cat.models if n != name and cat.resolve(n) is target]
    # a plain name (no -vN) before a versioned one; shorter before longer
    same.sort(key=lambda n: (bool(re.search(r"-v\d+$", n)), len(n), n))
    return (name, *same)


class Namer:
    """Spells CPU type names so that every node of ``nodes`` accepts them."""

    def __init__(self, nodes: Sequence[NodeFacts]) -> None:
        self.accepts = [accepts_of(n) for n in nodes]

    @property
    def known(self) -> bool:
        return any(a.known for a in self.accepts)

    def __call__(self, name: str) -> str | None:
        """A name of the same model every node accepts (None: some node accepts none of them)."""
        if not self.known:
            return name
        for candidate in spellings(name):
            if all(a.accepts(candidate) is not False for a in self.accepts):
                return candidate
        return None

    def lacking(self, name: str) -> list[Accepts]:
        """The nodes that accept no name of ``name``'s model."""
        names = spellings(name)
        return [a for a in self.accepts if all(a.accepts(n) is False for n in names)]


def named_ranking(ranked: Sequence[str], nodes: Sequence[NodeFacts]) -> dict:
    """A ranking (best first, catalog names) in names every node's Proxmox accepts
    (``Broadwell-noTSX-IBRS`` where a node's list lacks ``Broadwell-v4``). A better type no name of
    which every node knows is left out; ``reason`` says which and where."""
    namer = Namer(nodes)
    out: list[str] = []
    skipped: list[str] = []
    for name in ranked:
        spelled = namer(name)
        if spelled is None:
            if not out:
                lacking = ", ".join(f"{a.node} ({describe_release(a)})" for a in namer.lacking(name))
                skipped.append(f"{name} would run, but only under that versioned name, which {lacking} lacks")
            continue
        if spelled not in out:
            out.append(spelled)
    reason = None
    if skipped:
        reason = "; ".join(skipped[:3]) + ": upgrade pve-qemu-kvm/qemu-server there to use it"
    return {"recommended": out[0] if out else None, "ranked": out, "reason": reason}


def describe_release(a: Accepts) -> str:
    return f"Proxmox VE {release_of(a.pve_version)}" if a.pve_version else "its Proxmox"


def rolling_upgrade(nodes: Sequence[NodeFacts]) -> dict | None:
    """``{"releases": {"8.4": [...], ...}, "message": ...}`` when the online nodes run different
    Proxmox X.Y releases (a rolling upgrade); None when they agree or nothing is known."""
    by_release: dict[str, list[str]] = {}
    for n in nodes:
        rel = release_of(n.pve_version) if n.online else ""
        if rel:
            by_release.setdefault(rel, []).append(n.name)
    if len(by_release) < 2:
        return None
    order = sorted(by_release, key=version_tuple)
    parts = "; ".join(f"{', '.join(sorted(by_release[r]))} on {r}" for r in order)
    majors = {version_tuple(r)[0] for r in order}
    tail = (
        "move VMs toward the newer nodes: Proxmox supports live migration from older to newer releases only"
        if len(majors) > 1
        else "move VMs toward the newer nodes"
    )
    return {
        "mixed": True,
        "releases": {r: sorted(by_release[r]) for r in order},
        "newest": order[-1],
        "message": f"rolling upgrade in progress: {parts}; {tail}",
    }
