"""A node's CPU as the engine sees it, and the readers that build one from
/proc/cpuinfo text, the CLI's JSON host files, the Proxmox node status and
Proxmox's ``/cluster/qemu/cpu-flags``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from migration_guard.errors import HostDataError

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
    #: the physical address width in bits (/proc/cpuinfo ``address sizes: N bits physical``),
    #: None when unknown
    phys_bits: int | None = None


_VENDOR_IDS = {"genuineintel": "intel", "authenticamd": "amd", "hygongenuine": "amd"}
_AMD_WORDS = (
    "amd",
    "epyc",
    "ryzen",
    "opteron",
    "athlon",
    "phenom",
    "threadripper",
    "hygon",
    "turion",
    "sempron",
)
_INTEL_WORDS = ("intel", "xeon", "core", "atom", "celeron", "pentium")
_AMD_FLAGS = frozenset(
    {
        "svm",
        "sse4a",
        "misalignsse",
        "mmxext",
        "fxsr_opt",
        "cmp_legacy",
        "cr8_legacy",
        "extapic",
        "topoext",
        "perfctr_core",
        "xop",
        "fma4",
        "clzero",
        "fxsr-opt",
        "cmp-legacy",
        "cr8legacy",
        "perfctr-core",
    }
)
_INTEL_FLAGS = frozenset(
    {"vmx", "smx", "est", "tm2", "ds_cpl", "dtes64", "pdcm", "xtpr", "ept", "vpid", "ds-cpl", "pebs", "bts"}
)


def vendor_of(vendor_id: str | None = None, model: str = "", flags: Iterable[str] = ()) -> Vendor:
    """The vendor from /proc/cpuinfo's ``vendor_id`` when known, else from the model string
    ("AMD EPYC 7742", "Intel(R) Xeon(R) ..."), else from vendor-only flags (svm, sse4a / vmx, est)."""
    if vendor_id:
        key = vendor_id.strip().lower()
        if key in ("intel", "amd"):
            return key  # type: ignore[return-value]
        if key in _VENDOR_IDS:
            return _VENDOR_IDS[key]  # type: ignore[return-value]
    words = model.lower().replace("(r)", " ").replace("(tm)", " ").replace("-", " ").split()
    for word in words:
        if word in _AMD_WORDS:
            return "amd"
    for word in words:
        if word in _INTEL_WORDS:
            return "intel"
    flagset = {f.lower() for f in flags}
    amd = len(flagset & _AMD_FLAGS)
    intel = len(flagset & _INTEL_FLAGS)
    if amd > intel:
        return "amd"
    if intel > amd:
        return "intel"
    return "unknown"


def _words(value: object, what: str, name: str) -> frozenset[str]:
    if isinstance(value, str):
        items = value.split()
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        items = [w for v in value for w in v.split()]
    else:
        raise HostDataError(f"host {name}: {what} must be a list of names or a space separated string")
    return frozenset(w.lower() for w in items if w)


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def phys_bits_of(text: object) -> int | None:
    """The width of ``address sizes : 46 bits physical, 48 bits virtual`` (or a plain number),
    None when the text gives none."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text if 8 <= text <= 64 else None
    if not isinstance(text, str):
        return None
    words = text.replace(",", " ").split()
    for index, word in enumerate(words):
        if word.isdigit() and words[index + 1 : index + 3] == ["bits", "physical"]:
            bits = int(word)
            return bits if 8 <= bits <= 64 else None
    stripped = text.strip()
    if stripped.isdigit() and 8 <= int(stripped) <= 64:
        return int(stripped)
    return None


def host_from_cpuinfo_text(text: str, name: str) -> HostCpu:
    """First processor of a /proc/cpuinfo dump. Raises HostDataError."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if "flags" in fields:
                break
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key not in fields:
            fields[key] = value.strip()
    if "flags" not in fields:
        hint = " (this looks like an ARM CPU: only x86-64 is supported)" if "features" in fields else ""
        raise HostDataError(f"host {name}: no 'flags' line found in the /proc/cpuinfo text{hint}")
    flags = _words(fields["flags"], "flags", name)
    if not flags:
        raise HostDataError(f"host {name}: the /proc/cpuinfo 'flags' line is empty")
    model = fields.get("model name", "")
    return HostCpu(
        name=name,
        vendor=vendor_of(fields.get("vendor_id"), model, flags),
        model=model,
        flags=flags,
        flag_source="cpuinfo",
        bugs=_words(fields["bugs"], "bugs", name) if "bugs" in fields else None,
        family=_int(fields.get("cpu family")),
        model_number=_int(fields.get("model")),
        phys_bits=phys_bits_of(fields.get("address sizes")),
    )


def host_from_json(obj: object, default_name: str) -> HostCpu:
    """``{"name", "vendor", "model", "flags": [...] | "a b c", "bugs"?, "flag_source"?}``; also reads the
    real-CPU fixture shape (``model_name``, ``vendor_id``, ``cpu_family``, numeric ``model``).
    Raises HostDataError."""
    if not isinstance(obj, dict):
        raise HostDataError(f"host {default_name}: expected a JSON object with name, vendor, model and flags")
    name = obj.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise HostDataError(f"host {default_name}: 'name' must be a non-empty string")
    name = name.strip()
    if "flags" not in obj:
        raise HostDataError(f"host {name}: the JSON has no 'flags'")
    flags = _words(obj["flags"], "flags", name)
    if not flags:
        raise HostDataError(f"host {name}: 'flags' is empty")
    model_value = obj.get("model_name", obj.get("model", ""))
    model = model_value if isinstance(model_value, str) else ""
    number = _int(
        obj.get("model_number", obj.get("model") if not isinstance(obj.get("model"), str) else None)
    )
    family = _int(obj.get("family", obj.get("cpu_family")))
    source = obj.get("flag_source", "cpuinfo")
    if source not in ("cpuinfo", "qemu-kvm"):
        raise HostDataError(f"host {name}: flag_source must be 'cpuinfo' or 'qemu-kvm', not {source!r}")
    vendor_value = obj.get("vendor", obj.get("vendor_id"))
    if vendor_value is not None and not isinstance(vendor_value, str):
        raise HostDataError(f"host {name}: 'vendor' must be a string such as intel or amd")
    vendor = vendor_of(vendor_value, model, flags)
    if vendor_value and vendor_value.strip().lower() not in ("intel", "amd", "unknown", *_VENDOR_IDS):
        raise HostDataError(f"host {name}: unknown vendor {vendor_value!r} (use intel or amd)")
    bugs = obj.get("bugs")
    width = obj.get("phys_bits", obj.get("address_sizes"))
    if width is not None and phys_bits_of(width) is None:
        raise HostDataError(
            f"host {name}: phys_bits must be a number of bits from 8 to 64 "
            "(or address_sizes as /proc/cpuinfo prints it: '46 bits physical, 48 bits virtual')"
        )
    return HostCpu(
        name=name,
        vendor=vendor,
        model=model,
        flags=flags,
        flag_source=source,
        bugs=None if bugs is None else _words(bugs, "bugs", name),
        family=family,
        model_number=number,
        phys_bits=phys_bits_of(width),
    )


def host_from_proxmox(name: str, cpuinfo: dict) -> HostCpu:
    """From ``GET /nodes/{node}/status``'s ``cpuinfo`` (``model``, ``flags`` space separated, and
    from pve-common 9.2 (2026) ``vendor`` = /proc/cpuinfo's vendor_id and ``family`` = its cpu
    family, ``unknown``/0 when not read; pve-common ``PVE/ProcFSTools.pm`` read_cpuinfo). Without a
    usable vendor it comes from the model string and flags. Raises HostDataError when ``flags`` is
    missing."""
    if not isinstance(cpuinfo, dict) or not cpuinfo.get("flags"):
        raise HostDataError(f"node {name}: the node status has no cpuinfo.flags")
    flags = _words(cpuinfo["flags"], "cpuinfo.flags", name)
    model = str(cpuinfo.get("model") or "")
    return HostCpu(
        name=name,
        vendor=vendor_of(proxmox_vendor(cpuinfo), model, flags),
        model=model,
        flags=flags,
        family=proxmox_family(cpuinfo),
    )


def proxmox_vendor(cpuinfo: object) -> str | None:
    """``cpuinfo.vendor`` of a node status when it names a vendor (newer pve-common), else None."""
    value = cpuinfo.get("vendor") if isinstance(cpuinfo, dict) else None
    if not isinstance(value, str) or value.strip().lower() in ("", "unknown"):
        return None
    return value.strip()


def proxmox_family(cpuinfo: object) -> int | None:
    """``cpuinfo.family`` of a node status (newer pve-common; 0 there means not read), else None."""
    family = _int(cpuinfo.get("family")) if isinstance(cpuinfo, dict) else None
    return family if family else None


def host_from_qemu_flags(
    name: str,
    model: str,
    qemu_flags: Iterable[str],
    vendor: Vendor | None = None,
    family: int | None = None,
    phys_bits: int | None = None,
) -> HostCpu:
    """From ``GET /cluster/qemu/cpu-flags`` (QEMU names offered by that node's KVM); ``vendor`` and
    ``family`` from the node status when it has them."""
    flags = frozenset(f.strip().lower() for f in qemu_flags if f and f.strip())
    if vendor is None or vendor == "unknown":
        vendor = vendor_of(None, model, flags)
    return HostCpu(
        name=name,
        vendor=vendor,
        model=model,
        flags=flags,
        flag_source="qemu-kvm",
        family=family,
        phys_bits=phys_bits,
    )


def load_host_file(path: str) -> HostCpu:
    """A /proc/cpuinfo text or a JSON host file; ``-`` reads stdin. Raises HostDataError."""
    if path == "-":
        default_name = "stdin"
        try:
            text = sys.stdin.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise HostDataError(f"cannot read the host from stdin: {exc}") from exc
    else:
        default_name = os.path.splitext(os.path.basename(path))[0] or path
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError as exc:
            raise HostDataError(f"host file {path} does not exist") from exc
        except IsADirectoryError as exc:
            raise HostDataError(f"host file {path} is a directory, not a file") from exc
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise HostDataError(f"host file {path} cannot be read: {reason}") from exc
    label = "stdin" if path == "-" else path
    if text.lstrip().startswith(("{", "[")):
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise HostDataError(f"host file {label} is not valid JSON: {exc}") from exc
        return host_from_json(obj, default_name)
    if not text.strip():
        raise HostDataError(f"host file {label} is empty")
    return host_from_cpuinfo_text(text, default_name)
