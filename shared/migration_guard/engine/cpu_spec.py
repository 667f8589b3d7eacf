"""Parser for a VM's Proxmox ``cpu:`` value and for ``/etc/pve/virtual-guest/cpu-models.conf``.

The format (qemu-server ``PVE/QemuServer/CPUConfig.pm``):
``[[cputype=]TYPE][,flags=+F;-F...][,hidden=1][,hv-vendor-id=..][,phys-bits=N|host]
[,guest-phys-bits=N][,reported-model=..]``. No value means ``kvm64``. Flag names are kept in their
canonical QEMU spelling (``md_clear`` -> ``md-clear``). :func:`format_cpu` writes a spec back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from migration_guard.engine import cpu_models
from migration_guard.engine.cpu_models import PASSTHROUGH, Catalog
from migration_guard.engine.flags import canonical, rules
from migration_guard.errors import CpuSpecError, UnknownModelError


@dataclass(frozen=True, slots=True)
class CustomModel:
    name: str  # without the "custom-" prefix
    reported_model: str  # the QEMU model it builds on (default kvm64)
    flags: tuple[tuple[str, bool], ...] = ()
    phys_bits: str | None = None
    hidden: bool = False
    hv_vendor_id: str | None = None
    guest_phys_bits: int | None = None


@dataclass(frozen=True, slots=True)
class CpuSpec:
    raw: str  # the value as written ("" for no cpu: line)
    cputype: str  # e.g. "kvm64", "host", "x86-64-v2-AES", "Skylake-Server-v4", "custom-foo"
    flags: tuple[tuple[str, bool], ...] = ()  # (canonical QEMU feature name, True for +)
    hidden: bool = False
    hv_vendor_id: str | None = None
    phys_bits: str | None = None
    guest_phys_bits: int | None = None
    reported_model: str | None = None
    custom: CustomModel | None = None

    @property
    def is_passthrough(self) -> bool:
        return self.cputype in ("host", "max")


DEFAULT_TYPE = "kvm64"
_KEYS = (
    "cputype",
    "flags",
    "hidden",
    "hv-vendor-id",
    "phys-bits",
    "guest-phys-bits",
    "reported-model",
    "level",
)
_FLAG_RE = re.compile(r"^([+-])([A-Za-z0-9][A-Za-z0-9_.\-]*)$")
_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_HV_VENDOR_RE = re.compile(r"^[A-Za-z0-9]{1,12}$")
_CUSTOM_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_TRUE = ("1", "yes", "on", "true")
_FALSE = ("0", "no", "off", "false")


def _short(text: str, limit: int = 60) -> str:
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bool(key: str, value: str, where: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise CpuSpecError(f"{where}: {key}={_short(value)!r} is not a boolean (use 1 or 0)")


def _phys_bits(value: str, where: str) -> str:
    if value == "host":
        return value
    if value.isdigit() and 8 <= int(value) <= 64:
        return str(int(value))
    raise CpuSpecError(f"{where}: phys-bits={_short(value)!r} must be 'host' or a number from 8 to 64")


def _guest_phys_bits(value: str, where: str) -> int:
    if value.isdigit() and 32 <= int(value) <= 64:
        return int(value)
    raise CpuSpecError(f"{where}: guest-phys-bits={_short(value)!r} must be a number from 32 to 64")


def _level(value: str, where: str) -> int:
    if value.isdigit() and int(value) <= 4294967295:
        return int(value)
    raise CpuSpecError(f"{where}: level={_short(value)!r} must be a number from 0 to 4294967295")


def _hv_vendor(value: str, where: str) -> str:
    if _HV_VENDOR_RE.match(value):
        return value
    raise CpuSpecError(f"{where}: hv-vendor-id={_short(value)!r} must be 1 to 12 letters or digits")


def parse_flags(text: str, where: str, *, vm: bool) -> tuple[tuple[str, bool], ...]:
    """``+F;-F...`` -> ((canonical name, enabled), ...), later mentions win. ``vm`` limits the
    names to Proxmox's VM flag set (custom models may use any QEMU flag)."""
    if text.strip() == "":
        raise CpuSpecError(
            f"{where}: malformed flag list: flags= is empty (write +FLAG or -FLAG, separated by ';')"
        )
    result: dict[str, bool] = {}
    allowed = rules().vm_flags_allowed
    for item in text.split(";"):
        item = item.strip()
        match = _FLAG_RE.match(item)
        if match is None:
            raise CpuSpecError(
                f"{where}: malformed flag list at {_short(item) or 'an empty entry'!r} "
                "(each flag is +NAME or -NAME, separated by ';')"
            )
        name = canonical(match.group(2))
        if vm and name not in allowed:
            raise CpuSpecError(
                f"{where}: flag {match.group(2)!r} is not allowed in a VM's cpu flags; Proxmox allows only "
                f"{', '.join(sorted(allowed))} (define a custom model for other flags)"
            )
        result.pop(name, None)
        result[name] = match.group(1) == "+"
    return tuple(result.items())


def _check_type(cputype: str, where: str, cat: Catalog, custom_models: dict[str, CustomModel] | None):
    if not _TYPE_RE.match(cputype):
        raise CpuSpecError(f"{where}: {_short(cputype)!r} is not a CPU type")
    if cputype.startswith("custom-"):
        name = cputype[len("custom-") :]
        custom = (custom_models or {}).get(name)
        if custom is None:
            if custom_models is None:
                raise UnknownModelError(
                    f"{where}: unknown CPU type {cputype!r}: custom models need the cluster's cpu-models.conf"
                )
            raise UnknownModelError(
                f"{where}: unknown CPU type {cputype!r}: cpu-models.conf does not define {name!r} "
                "(or Proxmox hides it from the API token: it lists a custom model only to a token "
                f"with Mapping.Audit on /mapping/cpu/{name})"
            )
        return custom
    if cputype in PASSTHROUGH or cat.resolve(cputype) is not None:
        return None
    hint = cat.suggest(cputype)
    extra = f" (did you mean {hint!r}?)" if hint else " (see 'migration-guard cpu models')"
    raise UnknownModelError(f"{where}: unknown CPU type {_short(cputype)!r}{extra}")


def _check_reported(model: str, where: str, cat: Catalog) -> str:
    if model in PASSTHROUGH or model.startswith("custom-") or cat.resolve(model) is None:
        hint = cat.suggest(model)
        extra = f" (did you mean {hint!r}?)" if hint else ""
        raise UnknownModelError(
            f"{where}: reported-model={_short(model)!r} is not a built-in QEMU CPU model{extra}"
        )
    return model


def parse_cpu(
    value: str | None,
    custom_models: dict[str, CustomModel] | None = None,
    *,
    models: Catalog | None = None,
) -> CpuSpec:
    """Parse a ``cpu:`` value (None/"" means kvm64). Raises CpuSpecError naming the bad part."""
    raw = "" if value is None else value
    if not isinstance(raw, str):
        raise CpuSpecError(f"cpu value must be text, not {type(value).__name__}")
    text = raw.strip()
    cat = models if models is not None else cpu_models.catalog()
    if text == "":
        return CpuSpec(raw=raw, cputype=DEFAULT_TYPE)
    where = f"cpu {_short(text)!r}"
    if any(ch in text for ch in "\n\r\t\x00") or not text.isprintable():
        raise CpuSpecError(f"{where}: contains control characters")
    found: dict[str, str] = {}
    for index, part in enumerate(text.split(",")):
        part = part.strip()
        if part == "":
            continue
        if "=" in part:
            key, _, val = part.partition("=")
            key, val = key.strip(), val.strip()
        elif index == 0:
            key, val = "cputype", part
        else:
            raise CpuSpecError(
                f"{where}: unexpected {_short(part)!r} (options are key=value, e.g. flags=+pcid)"
            )
        if key not in _KEYS:
            raise CpuSpecError(f"{where}: unknown option {_short(key)!r} (known: {', '.join(_KEYS)})")
        if key in found:
            raise CpuSpecError(f"{where}: {key} is given twice")
        found[key] = val
    cputype = found.get("cputype", DEFAULT_TYPE)
    if cputype == "":
        raise CpuSpecError(f"{where}: cputype= is empty")
    custom = _check_type(cputype, where, cat, custom_models)
    if "level" in found:
        _level(found["level"], where)
    flags = parse_flags(found["flags"], where, vm=True) if "flags" in found else ()
    return CpuSpec(
        raw=raw,
        cputype=cputype,
        flags=flags,
        hidden=_bool("hidden", found["hidden"], where) if "hidden" in found else False,
        hv_vendor_id=_hv_vendor(found["hv-vendor-id"], where) if "hv-vendor-id" in found else None,
        phys_bits=_phys_bits(found["phys-bits"], where) if "phys-bits" in found else None,
        guest_phys_bits=_guest_phys_bits(found["guest-phys-bits"], where)
        if "guest-phys-bits" in found
        else None,
        reported_model=_check_reported(found["reported-model"], where, cat)
        if "reported-model" in found
        else None,
        custom=custom,
    )


def _format_flags(flags: tuple[tuple[str, bool], ...]) -> str:
    return ";".join(("+" if on else "-") + name for name, on in flags)


def format_cpu(spec: CpuSpec) -> str:
    """The ``cpu:`` value of a spec, in Proxmox's order; ``parse_cpu(format_cpu(s))`` gives ``s`` back."""
    parts = [spec.cputype]
    if spec.flags:
        parts.append("flags=" + _format_flags(spec.flags))
    if spec.hidden:
        parts.append("hidden=1")
    if spec.hv_vendor_id is not None:
        parts.append(f"hv-vendor-id={spec.hv_vendor_id}")
    if spec.phys_bits is not None:
        parts.append(f"phys-bits={spec.phys_bits}")
    if spec.guest_phys_bits is not None:
        parts.append(f"guest-phys-bits={spec.guest_phys_bits}")
    if spec.reported_model is not None:
        parts.append(f"reported-model={spec.reported_model}")
    return ",".join(parts)


#: qemu-server 9.2 added ``level`` (the highest basic CPUID leaf): no CPU feature, accepted and not judged
_CUSTOM_KEYS = ("flags", "phys-bits", "hidden", "hv-vendor-id", "reported-model", "guest-phys-bits", "level")


def parse_custom_models(text: str, *, models: Catalog | None = None) -> dict[str, CustomModel]:
    """Parse the cpu-models.conf format. Raises CpuSpecError."""
    cat = models if models is not None else cpu_models.catalog()
    result: dict[str, CustomModel] = {}
    current: str | None = None
    props: dict[str, str] = {}
    header_line = 0

    def finish() -> None:
        if current is None:
            return
        where = f"cpu-models.conf line {header_line} (cpu-model {current})"
        if "level" in props:
            _level(props["level"], where)
        reported = props.get("reported-model", DEFAULT_TYPE)
        result[current] = CustomModel(
            name=current,
            reported_model=_check_reported(reported, where, cat),
            flags=parse_flags(props["flags"], where, vm=False) if "flags" in props else (),
            phys_bits=_phys_bits(props["phys-bits"], where) if "phys-bits" in props else None,
            hidden=_bool("hidden", props["hidden"], where) if "hidden" in props else False,
            hv_vendor_id=_hv_vendor(props["hv-vendor-id"], where) if "hv-vendor-id" in props else None,
            guest_phys_bits=_guest_phys_bits(props["guest-phys-bits"], where)
            if "guest-phys-bits" in props
            else None,
        )

    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped == "" or stripped.startswith("#"):
            continue
        if not line[0].isspace():
            key, sep, val = stripped.partition(":")
            if sep != ":" or key.strip() != "cpu-model":
                raise CpuSpecError(
                    f"cpu-models.conf line {number}: expected 'cpu-model: NAME', got {_short(stripped)!r}"
                )
            finish()
            name = val.strip()
            if name.startswith("custom-"):
                name = name[len("custom-") :]
            if not _CUSTOM_NAME_RE.match(name):
                raise CpuSpecError(
                    f"cpu-models.conf line {number}: {_short(name)!r} is not a valid model name"
                )
            if name in result:
                raise CpuSpecError(f"cpu-models.conf line {number}: cpu-model {name} is defined twice")
            current, props, header_line = name, {}, number
            continue
        if current is None:
            raise CpuSpecError(f"cpu-models.conf line {number}: property before the first 'cpu-model:' line")
        key, _, val = stripped.partition(" ")
        key, val = key.strip(), val.strip()
        if key not in _CUSTOM_KEYS:
            raise CpuSpecError(f"cpu-models.conf line {number}: unknown property {_short(key)!r}")
        if key in props:
            raise CpuSpecError(f"cpu-models.conf line {number}: {key} is given twice for cpu-model {current}")
        props[key] = val
    finish()
    return result
