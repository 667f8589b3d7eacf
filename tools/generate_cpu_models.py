#!/usr/bin/env python3
"""Generate shared/migration_guard/data/cpu_models.json by asking a real QEMU over QMP.

    python3 tools/generate_cpu_models.py [--qemu /usr/bin/qemu-system-x86_64] [--accel tcg|kvm] [-o FILE]
    python3 tools/generate_cpu_models.py --qemu-source DIR --write-newer-models  # refresh newer_models.json

For every CPU model QEMU knows (``query-cpu-definitions``: versions and aliases included) it asks
``query-cpu-model-expansion`` type ``static`` and keeps the features that are on. Static expansion
names every CPUID feature once, by its canonical QEMU name (``sse4.1``, ``lahf-lm``, ``pni``), with
the version's property overrides applied, and leaves out QEMU's own knobs (``check``, ``l3-cache``,
``x-*``) and the spelling aliases that ``full`` expansion adds (``sse4_1``, ``sse4-1``, ``lahf_lm``).

Under TCG the generator then applies what QEMU changes when the same named model starts under KVM
(``kvm_default_props`` of target/i386/kvm/kvm-cpu.c, applied by ``kvm_cpu_instance_init`` to every
built-in model). On a Proxmox node run it with ``--qemu /usr/bin/kvm --accel kvm``: QEMU then reports
the KVM view itself and nothing is adjusted.

Models and versions the QEMU being asked does not know come from ``tools/newer_models.json``, a
translation of QEMU's own definitions (``builtin_x86_defs`` in target/i386/cpu.c: feature words and
each version's property overrides) into the same feature names. ``--qemu-source DIR`` with
``--write-newer-models`` rebuilds that table from a QEMU source tree, after checking the translator
against every model the running QEMU reports (the check's result is recorded in the table).

Proxmox's own types (x86-64-v2 .. v4) and its per-type flag additions (qemu-server
src/PVE/QemuServer/CPUConfig.pm) are applied last. Standard library only.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "shared" / "migration_guard" / "data" / "cpu_models.json"
NEWER_MODELS = Path(__file__).resolve().parent / "newer_models.json"

#: QEMU target/i386/kvm/kvm-cpu.c kvm_default_props (identical in 7.2.0 and 10.2.2): applied by
#: kvm_cpu_instance_init to every built-in model under KVM (x2apic stays on with the in-kernel
#: irqchip Proxmox uses; kvm-msi-ext-dest-id only turns on with a split irqchip)
KVM_DEFAULT_PROPS: dict[str, bool] = {
    "kvmclock": True,
    "kvm-nopiodelay": True,
    "kvm-asyncpf": True,
    "kvm-steal-time": True,
    "kvm-pv-eoi": True,
    "kvmclock-stable-bit": True,
    "x2apic": True,
    "kvm-msi-ext-dest-id": False,
    "acpi": False,
    "monitor": False,
    "svm": False,
}
KVM_SOURCE = "qemu/qemu target/i386/kvm/kvm-cpu.c kvm_default_props (v7.2.0; unchanged in v10.2.2)"

#: QEMU target/i386/tcg/tcg-cpu.c tcg_default_props (v7.2.0; x86_tcg_default_props in v10.2.2): what TCG
#: turns off in every built-in model. Under TCG the generator turns it back on where the definition has it.
TCG_DEFAULT_PROPS: dict[str, bool] = {"vme": False}
TCG_SOURCE = "qemu/qemu target/i386/tcg/tcg-cpu.c tcg_default_props (v7.2.0; unchanged in v10.2.2)"

PROXMOX_SOURCE = "proxmox qemu-server src/PVE/QemuServer/CPUConfig.pm"
#: CPUConfig.pm $builtin_models_by_arch: reported-model qemu64 plus these flags (canonical QEMU names;
#: Proxmox writes pni, sse4.1, sse4.2 as here)
_V2 = ["popcnt", "pni", "sse4.1", "sse4.2", "ssse3"]
_V2_AES = ["aes", *_V2]
_V3 = [*_V2_AES, "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"]
_V4 = [*_V3, "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]
PROXMOX_MODELS: dict[str, list[str]] = {
    "x86-64-v2": _V2,
    "x86-64-v2-AES": _V2_AES,
    "x86-64-v3": _V3,
    "x86-64-v4": _V4,
}
#: CPUConfig.pm get_pve_cpu_flags: +kvm_pv_unhalt +kvm_pv_eoi for every KVM guest (machine >= 2.3)
PROXMOX_KVM_FLAGS = ["kvm-pv-unhalt", "kvm-pv-eoi"]

#: models that take the node's vendor (CPUConfig.pm: 'default'), besides Proxmox's x86-64-vN
GENERIC = {"kvm64", "kvm32", "qemu64", "qemu32", "max", "host", "base"}
VENDORS = {"GenuineIntel": "intel", "AuthenticAMD": "amd", "HygonGenuine": "amd"}


def proxmox_type_flags(family: str) -> tuple[list[str], list[str]]:
    """CPUConfig.pm get_pve_cpu_flags per type: (added, removed), canonical QEMU names."""
    added: list[str] = []
    removed: list[str] = []
    if family == "kvm64":
        added.append("lahf-lm")
    if family in ("kvm64", "kvm32"):
        added.append("sep")
    if family.startswith("Opteron"):
        removed.append("rdtscp")
    return added, removed


def family_version(name: str) -> tuple[str, int | None]:
    base, sep, tail = name.rpartition("-v")
    if sep and tail.isdigit():
        return base, int(tail)
    return name, None


def vendor_of(name: str, vendor_id: str | None) -> str | None:
    family, _ = family_version(name)
    if name in GENERIC or family in GENERIC:
        return None
    return VENDORS.get(vendor_id or "")


# --------------------------------------------------------------------------------------------
# QMP


class Qmp:
    """A QEMU started with ``-machine none`` and QMP on stdio."""

    def __init__(self, qemu: str, accel: str) -> None:
        cmd = [
            qemu,
            "-machine",
            "none",
            "-accel",
            accel,
            "-nodefaults",
            "-nographic",
            "-display",
            "none",
            "-qmp",
            "stdio",
            "-S",
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        greeting = json.loads(self._line())
        version = greeting["QMP"]["version"]
        self.version = "{major}.{minor}.{micro}".format(**version["qemu"])
        self.package = str(version.get("package", "")).strip()
        self.call("qmp_capabilities")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("generate_cpu_models: QEMU exited before answering over QMP")
        return line

    def call(self, execute: str, **arguments: object) -> object:
        assert self.proc.stdin is not None
        msg: dict[str, object] = {"execute": execute}
        if arguments:
            msg["arguments"] = arguments
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        while True:
            reply = json.loads(self._line())
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(reply["error"].get("desc", str(reply["error"])))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, SystemExit, BrokenPipeError):
            self.call("quit")
        self.proc.wait(timeout=10)


def ask_qemu(qemu: str, accel: str) -> tuple[dict[str, dict], str, str]:
    """{name: {"vendor_id", "features" (set), "alias_of", "deprecated"}}, QEMU version, package."""
    qmp = Qmp(qemu, accel)
    try:
        definitions = qmp.call("query-cpu-definitions")
        assert isinstance(definitions, list)
        out: dict[str, dict] = {}
        for d in definitions:
            name = d["name"]
            if name == "base":
                continue
            entry: dict = {
                "vendor_id": None,
                "features": set(),
                "alias_of": d.get("alias-of"),
                "deprecated": bool(d.get("deprecated", False)),
            }
            if name not in ("host", "max"):
                expansion = qmp.call("query-cpu-model-expansion", type="static", model={"name": name})
                assert isinstance(expansion, dict)
                props = expansion["model"]["props"]
                entry["vendor_id"] = props.get("vendor")
                entry["features"] = {k for k, v in props.items() if v is True}
            out[name] = entry
        return out, qmp.version, qmp.package
    finally:
        qmp.close()


# --------------------------------------------------------------------------------------------
# QEMU's own definitions: target/i386/cpu.c + cpu.h


def _strip_comments(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
            out.append(" ")
        elif text.startswith("//", i):
            i = text.index("\n", i)
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _matching(text: str, open_at: int) -> int:
    """Index of the brace closing the one at ``open_at`` (strings skipped)."""
    depth = 0
    i = open_at
    while True:
        c = text[i]
        if c == '"':
            i += 1
            while text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1


def _top_level_blocks(body: str) -> list[str]:
    blocks = []
    i = 0
    while True:
        start = body.find("{", i)
        if start < 0:
            return blocks
        end = _matching(body, start)
        blocks.append(body[start + 1 : end])
        i = end + 1


class CpuDefinitions:
    """QEMU's built-in x86 models translated into QMP feature names."""

    def __init__(self, cpu_c: str, cpu_h: str) -> None:
        self.cpu_c = _strip_comments(cpu_c)
        self.macros: dict[str, str] = {}
        for text in (_strip_comments(cpu_h), self.cpu_c):
            for m in re.finditer(r"^[ \t]*#define[ \t]+(\w+)[ \t]+((?:[^\n\\]|\\\n)*)", text, re.M):
                self.macros.setdefault(m.group(1), m.group(2).replace("\\\n", " ").strip())
        self.feat_names = self._feature_words()
        self._values: dict[str, int] = {}

    def _feature_words(self) -> dict[str, list[str | None]]:
        start = self.cpu_c.index("feature_word_info[FEATURE_WORDS] = {")
        body = self.cpu_c[start : _matching(self.cpu_c, self.cpu_c.index("{", start)) + 1]
        words: dict[str, list[str | None]] = {}
        for m in re.finditer(r"\[(FEAT_\w+)\]\s*=\s*\{", body):
            block = body[m.end() - 1 : _matching(body, m.end() - 1)]
            names = re.search(r"\.feat_names\s*=\s*\{", block)
            if not names:
                continue
            inner = block[names.end() : _matching(block, names.end() - 1)]
            slots: list[str | None] = []
            # positional names, and designated ones such as `[16] = "avx10-128"`
            for index, tok in re.findall(r'(?:\[(\d+)\]\s*=\s*)?("[^"]*"|NULL)', inner):
                if index:
                    slots.extend([None] * (int(index) - len(slots)))
                slots.append(None if tok == "NULL" else tok.strip('"'))
            words[m.group(1)] = slots
        return words

    def value(self, expr: str) -> int:
        """Evaluate a feature-word expression (macros, ``1ULL << n``, ``|``)."""
        expr = expr.strip()
        if expr in self._values:
            return self._values[expr]

        def macro(m: re.Match) -> str:
            name = m.group(0)
            if name in self.macros:
                return f"({self.value(self.macros[name])})"
            raise KeyError(f"unknown macro {name}")

        py = re.sub(r"\b(0x[0-9a-fA-F]+|\d+)[uUlL]+\b", r"\1", " ".join(expr.split()))
        py = re.sub(r"\b[A-Za-z_]\w*\b", macro, py)
        value = int(eval(compile(ast.parse(py, mode="eval"), "<expr>", "eval"), {"__builtins__": {}}))
        self._values[expr] = value
        return value

    def features_of(self, words: dict[str, int]) -> set[str]:
        out = set()
        for word, bits in words.items():
            names = self.feat_names.get(word, [])
            out |= {names[b] for b in range(len(names)) if bits >> b & 1 and names[b]}
        return out

    def _dependencies(self) -> list[tuple[str, int, str, int]]:
        """feature_dependencies[]: (from word, from mask, to word, to mask), applied in order."""
        start = self.cpu_c.index("feature_dependencies[] = {")
        open_at = self.cpu_c.index("{", start)
        body = self.cpu_c[open_at + 1 : _matching(self.cpu_c, open_at)]
        deps = []
        for m in re.finditer(
            r"\.from\s*=\s*\{\s*(FEAT_\w+)\s*,([^}]*)\}\s*,\s*\.to\s*=\s*\{\s*(FEAT_\w+)\s*,([^}]*)\}", body
        ):
            deps.append((m.group(1), self.value(m.group(2)), m.group(3), self.value(m.group(4))))
        return deps

    def dependency_names(self) -> list[dict[str, list[str]]]:
        """feature_dependencies[] by name: when none of "from" is on, every "to" is turned off."""
        out = []
        for from_word, from_mask, to_word, to_mask in self._dependencies():
            out.append(
                {
                    "from": sorted(self.features_of({from_word: from_mask})),
                    "to": sorted(self.features_of({to_word: to_mask})),
                }
            )
        return [d for d in out if d["from"] and d["to"]]

    def models(self) -> dict[str, dict]:
        """{versioned or alias name: {"vendor_id", "features", "alias_of"}} as QEMU registers them.

        Follows x86_cpu_load_model (definition words, +hypervisor, every version's props up to N)
        and x86_cpu_expand_features (feature_dependencies). Accelerator defaults are not applied.
        """
        where = {
            name: (word, bit)
            for word, names in self.feat_names.items()
            for bit, name in enumerate(names)
            if name
        }
        deps = self._dependencies()
        start = self.cpu_c.index("builtin_x86_defs[] = {")
        open_at = self.cpu_c.index("{", start)
        body = self.cpu_c[open_at + 1 : _matching(self.cpu_c, open_at)]
        out: dict[str, dict] = {}
        for block in _top_level_blocks(body):
            name = re.search(r'\.name\s*=\s*"([^"]+)"', block).group(1)  # type: ignore[union-attr]
            vendor_expr = re.search(r"\.vendor\s*=\s*(\w+)", block).group(1)  # type: ignore[union-attr]
            vendor_id = self.macros.get(vendor_expr, vendor_expr).strip('"')
            versions_at = block.find(".versions")
            head = block if versions_at < 0 else block[:versions_at]
            words: dict[str, int] = {}
            for m in re.finditer(r"\.features\[(FEAT_\w+)\]\s*=\s*([^,]+),", head):
                words[m.group(1)] = words.get(m.group(1), 0) | self.value(m.group(2))
            hyper_word, hyper_bit = where["hypervisor"]  # x86_cpu_load_model sets CPUID_EXT_HYPERVISOR
            words[hyper_word] = words.get(hyper_word, 0) | 1 << hyper_bit
            versions: list[dict] = [{"version": 1}]
            if versions_at >= 0:
                vopen = block.index("{", block.index("]", versions_at))
                versions = []
                for vblock in _top_level_blocks(block[vopen + 1 : _matching(block, vopen)]):
                    number = re.search(r"\.version\s*=\s*(\d+)", vblock)
                    if not number:
                        continue
                    alias = re.search(r'\.alias\s*=\s*"([^"]+)"', vblock)
                    props = re.findall(r'\{\s*"([^"]+)"\s*,\s*"([^"]*)"\s*\}', vblock)
                    versions.append(
                        {
                            "version": int(number.group(1)),
                            "alias": alias.group(1) if alias else None,
                            "props": props,
                        }
                    )
            out[name] = {"vendor_id": vendor_id, "features": set(), "alias_of": f"{name}-v1"}
            for v in versions:  # x86_cpu_apply_version_props: every version up to N, in order
                for prop, value in v.get("props") or ():
                    if prop in where and value in ("on", "off"):
                        word, bit = where[prop]
                        words[word] = (
                            words.get(word, 0) | 1 << bit
                            if value == "on"
                            else words.get(word, 0) & ~(1 << bit)
                        )
                expanded = dict(words)
                for from_word, from_mask, to_word, to_mask in deps:  # x86_cpu_expand_features
                    if not expanded.get(from_word, 0) & from_mask:
                        expanded[to_word] = expanded.get(to_word, 0) & ~to_mask
                vname = f"{name}-v{v['version']}"
                out[vname] = {
                    "vendor_id": vendor_id,
                    "features": self.features_of(expanded),
                    "alias_of": None,
                }
                if v.get("alias"):
                    out[v["alias"]] = {"vendor_id": vendor_id, "features": set(), "alias_of": vname}
        return out


def check_translator(
    parsed: dict[str, dict], asked: dict[str, dict], accel: str, dependencies: list[dict] | None = None
) -> list[str]:
    """Where the translation of cpu.c disagrees with what the running QEMU reports."""
    problems = []
    for name, entry in sorted(asked.items()):
        if name in ("host", "max") or entry["alias_of"] or name not in parsed:
            continue
        mine = set(parsed[name]["features"])
        if accel == "tcg":
            mine -= {prop for prop, on in TCG_DEFAULT_PROPS.items() if not on}
        else:
            mine = _kvm_view(mine, dependencies)
        if mine != entry["features"]:
            missing = sorted(entry["features"] - mine)
            extra = sorted(mine - entry["features"])
            problems.append(f"{name}: translation lacks {missing} and adds {extra}")
    return problems


def _kvm_view(features: set[str], dependencies: list[dict] | None) -> set[str]:
    """QEMU's KVM defaults, then its feature dependencies again (x86_cpu_expand_features runs after
    kvm_cpu_instance_init: svm off takes npt, nrip-save, ... with it)."""
    out = set(features)
    for prop, on in KVM_DEFAULT_PROPS.items():
        (out.add if on else out.discard)(prop)
    for dep in dependencies or ():
        if not out & set(dep["from"]):
            out -= set(dep["to"])
    return out


def write_newer_models(
    source_dir: Path, asked: dict[str, dict], qemu_version: str, accel: str, out: Path
) -> dict:
    cpu_c = (source_dir / "target/i386/cpu.c").read_text(encoding="utf-8")
    cpu_h = (source_dir / "target/i386/cpu.h").read_text(encoding="utf-8")
    version_file = source_dir / "VERSION"
    tag = "v" + version_file.read_text().strip() if version_file.exists() else "unknown"
    definitions = CpuDefinitions(cpu_c, cpu_h)
    parsed = definitions.models()
    dependencies = definitions.dependency_names()
    problems = check_translator(parsed, asked, accel, dependencies)
    newer = {name: parsed[name] for name in sorted(parsed) if name not in asked}
    tcg_removed = {
        prop: sorted(n for n, e in parsed.items() if prop in e["features"])
        for prop, on in TCG_DEFAULT_PROPS.items()
        if not on
    }
    table = {
        "source": f"qemu/qemu target/i386/cpu.c @ {tag} "
        "(builtin_x86_defs, feature_word_info, feature_dependencies; cpu.h bit macros)",
        "translated_by": "tools/generate_cpu_models.py --qemu-source ... --write-newer-models",
        "check": {
            "against": f"QEMU {qemu_version} QMP query-cpu-model-expansion type=static accel={accel}",
            "models_compared": sum(
                1 for n, e in asked.items() if n in parsed and not e["alias_of"] and n not in ("host", "max")
            ),
            "disagreements": problems,
        },
        "note": "models: only those the QEMU that was asked does not know; features as QEMU's definition "
        "gives them (definition words, +hypervisor, version props, feature_dependencies), before any "
        "accelerator's defaults. tcg_removed: every translated model whose definition has a feature "
        "TCG's defaults turn off (the generator turns it back on for models asked under TCG)",
        "tcg_removed": tcg_removed,
        "translated": sorted(n for n, e in parsed.items() if not e["alias_of"]),
        "vendors": {n: e["vendor_id"] for n, e in sorted(parsed.items())},
        "feature_dependencies": dependencies,
        "models": {
            name: {"vendor_id": e["vendor_id"], "features": sorted(e["features"]), "alias_of": e["alias_of"]}
            for name, e in newer.items()
        },
    }
    out.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    return table


# --------------------------------------------------------------------------------------------
# the catalog


def build(
    asked: dict[str, dict], qemu_version: str, package: str, accel: str, newer: dict | None, qemu_binary: str
) -> dict:
    qmp_source = f"qemu-{qemu_version} QMP"
    models: dict[str, dict] = {}

    tcg_removed: dict[str, set[str]] = {}
    if newer:
        tcg_removed = {prop: set(names) for prop, names in (newer.get("tcg_removed") or {}).items()}
    untranslated: list[str] = []
    vendors: dict[str, str] = dict((newer or {}).get("vendors") or {})
    dependencies: list[dict] | None = (newer or {}).get("feature_dependencies")
    vendor_guessed: list[str] = []

    def add(name: str, entry: dict, source: str) -> None:
        family, version = family_version(name)
        alias_of = entry.get("alias_of")
        features = set(entry["features"])
        passthrough = name in ("host", "max")
        added: list[str] = []
        if not alias_of and not passthrough:
            if source == qmp_source and accel == "tcg":
                # undo TCG's defaults where the definition has the feature, then QEMU's KVM defaults
                if name not in set((newer or {}).get("translated", ())):
                    untranslated.append(name)
                for prop, names in tcg_removed.items():
                    if name in names:
                        features.add(prop)
                features = _kvm_view(features, dependencies)
            elif source != qmp_source:
                features = _kvm_view(features, dependencies)
            plus, minus = proxmox_type_flags(family)
            features |= set(PROXMOX_KVM_FLAGS) | set(plus)
            features -= set(minus)
            added = sorted({"+" + f for f in PROXMOX_KVM_FLAGS + plus} | {"-" + f for f in minus})
        else:
            features = set()
        vendor_id = entry.get("vendor_id")
        if source == qmp_source and accel == "kvm" and not passthrough:
            # under KVM QEMU reports the node's vendor for every named model (host_cpu_instance_init);
            # the model's own vendor is the one in its definition
            if name in vendors:
                vendor_id = vendors[name]
            else:
                vendor_guessed.append(name)
        generic = name in GENERIC or family in GENERIC
        models[name] = {
            "vendor": vendor_of(name, vendor_id),
            "vendor_id": None if generic or passthrough else vendor_id,
            "features": sorted(features),
            "source": source,
            "family": family,
            "version": version,
            "alias_of": alias_of,
            "deprecated": bool(entry.get("deprecated", False)),
            "passthrough": passthrough,
            "proxmox_added": added,
        }

    for name in sorted(asked):
        add(name, asked[name], qmp_source)
    newer_source = None
    if newer:
        newer_source = str(newer["source"])
        short = newer_source.split(" (")[0].replace(" @ ", " ")
        for name, entry in sorted(newer["models"].items()):
            if name not in models:
                add(name, entry, short)
    # an unversioned name whose -v1 is known is an alias of it (QEMU registers it so)
    for name, entry in list(models.items()):
        if (
            entry["version"] is None
            and not entry["alias_of"]
            and f"{name}-v1" in models
            and not entry["passthrough"]
        ):
            entry["alias_of"] = f"{name}-v1"
            entry["features"] = []
            entry["proxmox_added"] = []

    base_name = models["qemu64"]["alias_of"] or "qemu64"
    qemu64 = models[base_name]
    for name, extra in PROXMOX_MODELS.items():
        models[name] = {
            "vendor": None,
            "vendor_id": None,
            "features": sorted(set(qemu64["features"]) | set(extra)),
            "source": PROXMOX_SOURCE,
            "family": name,
            "version": None,
            "alias_of": None,
            "deprecated": False,
            "passthrough": False,
            "proxmox_added": sorted({"+" + f for f in extra} | set(qemu64["proxmox_added"])),
        }
    notes = [
        "features: QEMU feature names as query-cpu-model-expansion type=static reports them (canonical "
        "spellings, one per CPUID bit), only those turned on, after QEMU's KVM defaults and Proxmox's "
        "additions",
        "an unversioned model name and QEMU's legacy names (Skylake-Server-IBRS, Cascadelake-Server-noTSX, "
        "...) are aliases (alias_of) of one versioned model and carry no features of their own",
        "x86-64-v2, x86-64-v2-AES, x86-64-v3, x86-64-v4: Proxmox's qemu64 plus flags (proxmox_added)",
        "Proxmox adds +kvm-pv-unhalt +kvm-pv-eoi to every KVM guest, +lahf-lm to kvm64, +sep to kvm64 and "
        "kvm32, -rdtscp to Opteron models; it starts every type but host with enforce, and named models "
        "with their vendor",
        "host and max pass the node's CPU through (passthrough, no feature list)",
    ]
    if accel == "tcg":
        notes.append(
            "asked under TCG: QEMU's TCG defaults (vme off) undone where the model's definition has the "
            "feature (tcg_removed of the newer-models table), then QEMU's KVM defaults applied"
        )
        if untranslated:
            notes.append(
                f"TCG defaults could not be undone for {', '.join(sorted(untranslated))} "
                "(not in the translated definitions): vme may be missing there"
            )
    if vendor_guessed:
        notes.append(
            f"vendor of {', '.join(sorted(vendor_guessed))} is the node's (QEMU under KVM reports the host "
            "vendor and these models are not in the newer-models table's vendors)"
        )
    if newer_source:
        notes.append(
            "models the asked QEMU does not know come from QEMU's own definitions (source names them), "
            "translated by this generator; translator check: "
            f"{newer['check']['models_compared']} models compared with {newer['check']['against']}, "
            f"{len(newer['check']['disagreements'])} disagreements"
        )
    return {
        "schema": 1,
        "provenance": {
            "generator": "tools/generate_cpu_models.py",
            "qemu": f"{qemu_version} ({package})" if package else qemu_version,
            "qemu_binary": qemu_binary,
            "accel": accel,
            "expansion": "static",
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "notes": notes,
            "tcg_adjustments_undone": TCG_DEFAULT_PROPS if accel == "tcg" else {},
            "tcg_adjustments_source": TCG_SOURCE if accel == "tcg" else None,
            "kvm_adjustments": KVM_DEFAULT_PROPS if accel == "tcg" else {},
            "kvm_adjustments_source": KVM_SOURCE if accel == "tcg" else "reported by QEMU itself under KVM",
            "proxmox_source": PROXMOX_SOURCE,
            "newer_models_source": newer_source,
        },
        "models": dict(sorted(models.items())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--qemu", default="/usr/bin/qemu-system-x86_64", help="QEMU binary (on a Proxmox node: /usr/bin/kvm)"
    )
    parser.add_argument(
        "--accel",
        default="tcg",
        choices=["tcg", "kvm"],
        help="tcg: apply QEMU's KVM defaults here; kvm (Proxmox node): QEMU reports them",
    )
    parser.add_argument("-o", "--output", default=str(DEFAULT_OUTPUT))
    parser.add_argument(
        "--newer-models",
        default=str(NEWER_MODELS),
        help="table of models newer than the asked QEMU ('' for none)",
    )
    parser.add_argument("--qemu-source", help="QEMU source tree to translate target/i386/cpu.c from")
    parser.add_argument(
        "--write-newer-models",
        action="store_true",
        help="with --qemu-source: rebuild the --newer-models table, then the catalog",
    )
    args = parser.parse_args(argv)
    if not Path(args.qemu).exists():
        print(
            f"generate_cpu_models: {args.qemu} does not exist (apt-get install qemu-system-x86, "
            "or on a Proxmox node --qemu /usr/bin/kvm)",
            file=sys.stderr,
        )
        return 2
    if args.write_newer_models and not args.qemu_source:
        print("generate_cpu_models: --write-newer-models needs --qemu-source DIR", file=sys.stderr)
        return 2
    asked, version, package = ask_qemu(args.qemu, args.accel)
    newer = None
    if args.write_newer_models:
        newer = write_newer_models(
            Path(args.qemu_source), asked, version, args.accel, Path(args.newer_models)
        )
        for problem in newer["check"]["disagreements"]:
            print(f"translator check: {problem}", file=sys.stderr)
        print(f"wrote {args.newer_models}: {len(newer['models'])} models newer than QEMU {version}")
    elif args.newer_models and Path(args.newer_models).exists():
        newer = json.loads(Path(args.newer_models).read_text(encoding="utf-8"))
    data = build(asked, version, package, args.accel, newer, args.qemu)
    Path(args.output).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    aliases = sum(1 for m in data["models"].values() if m["alias_of"])
    print(f"wrote {args.output}: {len(data['models'])} models ({aliases} aliases) from QEMU {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
