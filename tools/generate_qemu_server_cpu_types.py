"""Write shared/migration_guard/data/qemu_server_cpu_types.json: the ``cpu:`` types each qemu-server release
accepts.

Reads a clone of proxmox/qemu-server: for every "bump version to X" commit, the built-in model list
of ``PVE/QemuServer/CPUConfig.pm`` (``$cpu_vendor_list`` / ``$cpu_models_by_arch->{x86_64}``) and
Proxmox's own types (``$builtin_models``: x86-64-v2..v4). Consecutive releases with the same list
are kept as one entry (``from`` .. ``until``). A release that reads pve-qemu-kvm's
``/usr/share/kvm/cpu-models-x86_64.json`` is marked ``qemu_list``: there the node's QEMU package
decides and the list below is only qemu-server's fallback.

    python3 tools/generate_qemu_server_cpu_types.py /path/to/qemu-server [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

VENDOR_LINE = re.compile(r"^\s*'?([\w.\-]+)'?\s*=>\s*'(GenuineIntel|AuthenticAMD|default)'")
BUILTIN_LINE = re.compile(r"^\s*'(x86-64-v[\w\-]+)'\s*=>\s*\{")
BUMP = re.compile(r"bump version to (\d+\.\d+[.-]\d+)")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def types_at(repo: Path, commit: str) -> tuple[list[str], bool, str] | None:
    for path in ("src/PVE/QemuServer/CPUConfig.pm", "PVE/QemuServer/CPUConfig.pm"):
        try:
            text = git(repo, "show", f"{commit}:{path}")
        except subprocess.CalledProcessError:
            continue
        names: set[str] = set()
        in_aarch64 = False
        for line in text.splitlines():
            if re.match(r"^\s*aarch64\s*=>\s*\{", line):
                in_aarch64 = True
            elif in_aarch64 and re.match(r"^\s*\},?\s*$", line):
                in_aarch64 = False
            if in_aarch64:
                continue
            m = VENDOR_LINE.match(line) or BUILTIN_LINE.match(line)
            if m:
                names.add(m.group(1))
        if "->{host} = 'default'" in text or "{$host_arch}->{host}" in text:
            names.add("host")
        return sorted(names), "cpu-models-x86_64.json" in text, path
    return None


def version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.split(r"[.-]", v))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path)
    default_out = Path(__file__).parent.parent / "shared/migration_guard/data/qemu_server_cpu_types.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    head = git(args.repo, "rev-parse", "HEAD").strip()
    rows = git(args.repo, "log", "--reverse", "--format=%H %ad %s", "--date=short").splitlines()
    releases = []
    for row in rows:
        commit, date, subject = row.split(" ", 2)
        m = BUMP.search(subject)
        if not m or int(m.group(1).split(".")[0]) < 6:
            continue
        got = types_at(args.repo, commit)
        if got is None:
            continue
        names, qemu_list, path = got
        releases.append((m.group(1), commit, date, names, qemu_list, path))
    releases.sort(key=lambda r: version_key(r[0]))
    entries: list[dict] = []
    for version, commit, date, names, qemu_list, path in releases:
        if entries and entries[-1]["types"] == names and entries[-1]["qemu_list"] == qemu_list:
            entries[-1]["until"] = version
            continue
        entries.append(
            {
                "from": version,
                "until": version,
                "qemu_list": qemu_list,
                "source": f"proxmox/qemu-server {path} at {commit[:12]} (bump version to {version}, {date})",
                "types": names,
            }
        )
    out = {
        "schema": 1,
        "provenance": {
            "generator": "tools/generate_qemu_server_cpu_types.py",
            "repository": "https://github.com/proxmox/qemu-server",
            "head": head,
            "read": "for each 'bump version to X' commit: the x86_64 model list of CPUConfig.pm "
            "($cpu_vendor_list, later $cpu_models_by_arch) plus Proxmox's built-in x86-64-vN types; "
            "validate_vm_cpu_conf dies \"Built-in cputype '...' is not defined (missing 'custom-' prefix?)\" "
            "for any other name that is not custom-<name>",
            "qemu_list": "true: the release reads /usr/share/kvm/cpu-models-x86_64.json of pve-qemu-kvm when "
            "present (every QEMU model, versioned names included); 'types' is its fallback list",
        },
        "releases": entries,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"{len(releases)} releases, {len(entries)} distinct lists -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
