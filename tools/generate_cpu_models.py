#!/usr/bin/env python3
"""Generate shared/data/cpu_models.json by asking a real QEMU over QMP.

    python3 tools/generate_cpu_models.py [--qemu /usr/bin/qemu-system-x86_64] [--accel tcg|kvm] [-o FILE]

For every CPU model QEMU knows (``query-cpu-definitions``: versions and aliases included) it asks
``query-cpu-model-expansion`` (type ``full``: every feature the model turns on, with the version's
property overrides applied) and records the features that are on. Under TCG it then applies what
QEMU changes when the same model starts under KVM (``kvm_default_props`` of
target/i386/kvm/kvm-cpu.c); run on a Proxmox node with ``--qemu /usr/bin/kvm --accel kvm`` QEMU
reports the KVM view itself and no adjustment is applied. Proxmox's own types and per-type flag
additions (qemu-server PVE/QemuServer/CPUConfig.pm) are added last. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

#: QEMU 7.2 target/i386/kvm/kvm-cpu.c kvm_default_props: what a named model gets under KVM
KVM_DEFAULT_PROPS = {
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
KVM_SOURCE = "QEMU 7.2 target/i386/kvm/kvm-cpu.c kvm_default_props"

#: qemu-server PVE/QemuServer/CPUConfig.pm: Proxmox's models are qemu64 plus flags
PROXMOX_MODELS = {
    "x86-64-v2": ["popcnt", "sse3", "sse4.1", "sse4.2", "ssse3"],
    "x86-64-v2-AES": ["popcnt", "sse3", "sse4.1", "sse4.2", "ssse3", "aes"],
    "x86-64-v3": ["popcnt", "sse3", "sse4.1", "sse4.2", "ssse3", "aes",
                  "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"],
    "x86-64-v4": ["popcnt", "sse3", "sse4.1", "sse4.2", "ssse3", "aes",
                  "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave",
                  "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"],
}
PROXMOX_SOURCE = "proxmox qemu-server src/PVE/QemuServer/CPUConfig.pm"
#: flags Proxmox adds to every VM under KVM, and per type
PROXMOX_KVM_FLAGS = ["kvm-pv-unhalt", "kvm-pv-eoi"]
PROXMOX_TYPE_FLAGS = {"kvm64": (["lahf-lm", "sep"], [])}
PROXMOX_OPTERON_FLAGS = ([], ["rdtscp"])

GENERIC = {"kvm64", "kvm32", "qemu64", "qemu32", "max", "host", "base"}
NOT_FEATURES = {"vendor", "model-id", "family", "model", "stepping", "level", "xlevel", "xlevel2",
                "min-level", "min-xlevel", "min-xlevel2", "tsc-frequency", "phys-bits"}


class Qmp:
    def __init__(self, qemu: str, accel: str) -> None:
        cmd = [qemu, "-machine", "none", "-accel", accel, "-nodefaults", "-nographic",
               "-display", "none", "-qmp", "stdio", "-S"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        greeting = json.loads(self._line())
        self.version = greeting["QMP"]["version"]["qemu"]
        self.call("qmp_capabilities")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("QEMU exited before answering over QMP")
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
        try:
            self.call("quit")
        except (RuntimeError, SystemExit, BrokenPipeError):
            pass
        self.proc.wait(timeout=10)


def vendor_of(name: str, props: dict) -> str | None:
    if name in GENERIC or name.split("-v")[0] in GENERIC:
        return None
    vendor = props.get("vendor")
    if vendor == "GenuineIntel":
        return "intel"
    if vendor in ("AuthenticAMD", "HygonGenuine"):
        return "amd"
    return None


def family_version(name: str) -> tuple[str, int | None]:
    base, sep, tail = name.rpartition("-v")
    if sep and tail.isdigit():
        return base, int(tail)
    return name, None


def generate(qemu: str, accel: str) -> dict:
    qmp = Qmp(qemu, accel)
    definitions = qmp.call("query-cpu-definitions")
    assert isinstance(definitions, list)
    models: dict[str, dict] = {}
    source = f"qemu-{qmp.version['major']}.{qmp.version['minor']}.{qmp.version['micro']} QMP " \
             f"query-cpu-model-expansion type=full accel={accel}"
    for d in sorted(definitions, key=lambda d: d["name"]):
        name = d["name"]
        if name == "base":
            continue
        family, version = family_version(name)
        entry: dict[str, object] = {
            "vendor": None,
            "features": [],
            "source": source,
            "family": family,
            "version": version,
            "alias_of": d.get("alias-of"),
            "deprecated": bool(d.get("deprecated", False)),
            "passthrough": name in ("host", "max"),
            "proxmox_added": [],
        }
        if name in ("host", "max"):
            models[name] = entry
            continue
        expansion = qmp.call("query-cpu-model-expansion", type="full", model={"name": name})
        assert isinstance(expansion, dict)
        props = expansion["model"]["props"]
        features = {k for k, v in props.items() if v is True and k not in NOT_FEATURES}
        if accel == "tcg":
            for prop, on in KVM_DEFAULT_PROPS.items():
                (features.add if on else features.discard)(prop)
        entry["vendor"] = vendor_of(name, props)
        if d.get("alias-of"):
            entry["features"] = []  # an alias carries no features of its own
        else:
            entry["features"] = sorted(features)
        models[name] = entry
    qmp.close()

    # Proxmox's additions under KVM, per type
    for name, entry in models.items():
        if entry["alias_of"] or entry["passthrough"]:
            continue
        added, removed = PROXMOX_TYPE_FLAGS.get(str(entry["family"]), ([], []))
        if str(entry["family"]).startswith("Opteron_"):
            added, removed = PROXMOX_OPTERON_FLAGS
        feats = set(entry["features"]) | set(PROXMOX_KVM_FLAGS) | set(added)  # type: ignore[arg-type]
        feats -= set(removed)
        entry["features"] = sorted(feats)
        entry["proxmox_added"] = sorted(set(PROXMOX_KVM_FLAGS) | {"+" + a for a in added} | {"-" + r for r in removed})

    qemu64 = models["qemu64"]
    if qemu64["alias_of"]:
        qemu64 = models[str(qemu64["alias_of"])]
    base = set(qemu64["features"])  # type: ignore[arg-type]
    for name, extra in PROXMOX_MODELS.items():
        models[name] = {
            "vendor": None,
            "features": sorted(base | set(extra)),
            "source": f"{PROXMOX_SOURCE}: qemu64 + {', '.join('+' + f for f in extra)}",
            "family": name,
            "version": None,
            "alias_of": None,
            "deprecated": False,
            "passthrough": False,
            "proxmox_added": sorted(set(extra)),
        }
    return {
        "schema": 1,
        "provenance": {
            "generator": "tools/generate_cpu_models.py",
            "qemu": f"{qmp.version['major']}.{qmp.version['minor']}.{qmp.version['micro']}",
            "qemu_binary": qemu,
            "accel": accel,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "kvm_adjustments": KVM_DEFAULT_PROPS if accel == "tcg" else {},
            "kvm_adjustments_source": KVM_SOURCE if accel == "tcg" else "reported by QEMU under KVM",
            "proxmox_source": PROXMOX_SOURCE,
            "notes": [
                "features: QEMU feature names as QMP reports them, only those turned on",
                "an unversioned model name is an alias of its -v1 (alias_of), as QEMU defines it",
                "Proxmox adds +kvm-pv-unhalt +kvm-pv-eoi to every KVM guest, +lahf-lm +sep to kvm64, "
                "-rdtscp to Opteron models",
            ],
        },
        "models": models,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qemu", default="/usr/bin/qemu-system-x86_64")
    parser.add_argument("--accel", default="tcg", choices=["tcg", "kvm"])
    parser.add_argument("-o", "--output", default=str(Path(__file__).resolve().parents[1] / "shared/data/cpu_models.json"))
    args = parser.parse_args(argv)
    if not Path(args.qemu).exists():
        print(f"generate_cpu_models: {args.qemu} does not exist (apt-get install qemu-system-x86)", file=sys.stderr)
        return 2
    data = generate(args.qemu, args.accel)
    Path(args.output).write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {args.output}: {len(data['models'])} models from QEMU {data['provenance']['qemu']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
