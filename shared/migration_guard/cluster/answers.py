"""What Proxmox's answers must look like: the expected shape of every path the reader reads
(``SHAPES``) and the few words that say what came back instead (a proxy's HTML page, proxmoxer's
``{"errors": <the bytes>}`` for a body it could not decode, a list where an object belongs)."""

from __future__ import annotations

from typing import Any

#: what ``data`` of each path the reader reads must be: (type, keys every row or object needs).
#: Anything else is a bad answer (ProxmoxBadAnswer), never an empty value. The shapes are those of
#: the paths' ``returns`` schemas in qemu-server ``PVE/API2/Qemu.pm``, ``PVE/API2/Qemu/Machine.pm``
#: and pve-manager ``PVE/API2/Nodes.pm``, ``PVE/API2/Cluster.pm``, ``PVE/API2/Cluster/Qemu/CPUFlags.pm``.
SHAPES: dict[str, tuple[type, tuple[str, ...]]] = {
    "nodes": (list, ("node",)),
    "cpu-flags": (list, ("name",)),
    "node-status": (dict, ()),
    "node-machines": (list, ("id",)),
    "resources": (list, ("vmid",)),
    "vm-config": (list, ("key",)),  # GET .../pending: one row per option
    "vm-status": (dict, ("status",)),
    "node-vms": (list, ("vmid",)),
    "vm-precondition": (dict, ()),
    "storage-content": (list, ("volid",)),  # pve-storage PVE/API2/Storage/Content.pm index
}


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"the string {_snippet(value)!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return "an object"


def _snippet(text: str, limit: int = 60) -> str:
    """A short, printable piece of a body (no control characters; cut)."""
    clean = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def _not_json(raw: Any) -> str:
    """What a body that is not JSON looks like, in a few words."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
    low = text.lower()
    if "<html" in low or "<!doctype" in low:
        start, end = low.find("<title>"), low.find("</title>")
        title = _snippet(text[start + 7 : end]) if 0 <= start < end else ""
        return f"an HTML page ({title})" if title else "an HTML page"
    if not text.strip():
        return "an empty body"
    if text.lstrip()[:1] in ("{", "["):
        return f"JSON that does not parse (cut off after {len(raw)} bytes?)"
    return f"text that is not JSON ({_snippet(text)!r})"


def bad_shape(kind: str, data: Any) -> str:
    """ "" when ``data`` has the shape path ``kind`` returns, else what came back instead."""
    # proxmoxer's JSON serializer answers a body it cannot decode with {"errors": <the bytes>}
    if isinstance(data, dict) and list(data) == ["errors"] and isinstance(data["errors"], bytes | str):
        return _not_json(data["errors"])
    shape = SHAPES.get(kind)
    if shape is None:
        return ""
    want, keys = shape
    if not isinstance(data, want):
        return f"data {kind_of(data)} where {'a list' if want is list else 'an object'} was expected"
    if isinstance(data, list):
        for row in data:
            if not isinstance(row, dict):
                return f"a row that is {kind_of(row)}, not an object"
            missing = [k for k in keys if k not in row]
            if missing:
                return f"a row without {missing[0]!r}"
    elif isinstance(data, dict):
        missing = [k for k in keys if k not in data]
        if missing:
            return f"an object without {missing[0]!r}"
    return ""
