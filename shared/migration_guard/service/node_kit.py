"""The node kit (``GET /v1/node-kit``): the hookscript's launcher, its standard-library modules and
installer (package ``migration_guard_hook``), as one self-extracting POSIX shell script for the
service's version, so a node needs nothing but its python3 (no venv, no PyPI).

The script carries the service's URL and the bearer token the kit was fetched with (base64 in a
here-document: it lands in a mode 0600 file on each node, never on a command line); ``manifest``
names the files with their SHA-256, to check what a node runs."""

from __future__ import annotations

import base64
import hashlib
import shlex
from dataclasses import dataclass
from functools import cache
from importlib import metadata, resources

PACKAGE = "migration_guard_hook"
LAUNCHER = "migration-guard-hook"
TEMPLATE = "node-kit.sh"
#: the here-document's end marker: base64 never contains it
_EOF = "MIGRATION_GUARD_KIT_EOF"


@dataclass(frozen=True, slots=True)
class KitFile:
    name: str
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@cache
def version() -> str:
    try:
        return metadata.version("pve-migration-guard")
    except metadata.PackageNotFoundError:
        return "unknown"


@cache
def kit_files() -> tuple[KitFile, ...]:
    """The launcher and the modules it imports (``guard_*.py``), as packaged with this service."""
    folder = resources.files(PACKAGE)
    names = sorted(f.name for f in folder.iterdir() if f.name.startswith("guard_") and f.name.endswith(".py"))
    return tuple(KitFile(name, (folder / name).read_bytes()) for name in [LAUNCHER, *names])


def _heredoc(target: str, content: bytes) -> str:
    encoded = base64.encodebytes(content).decode("ascii")
    return f"    base64 -d > \"$1/{target}\" <<'{_EOF}'\n{encoded}{_EOF}\n"


def script(url: str, token: str) -> str:
    """The self-extracting kit for a service at ``url`` (as the node reaches it), with ``token``."""
    template = (resources.files(PACKAGE) / TEMPLATE).read_text(encoding="utf-8")
    files = "".join(_heredoc(f.name, f.content) for f in kit_files())
    if token:
        files += _heredoc("token", token.encode() + b"\n")
    return (
        template.replace("@FILES@\n", files)
        .replace("@VERSION@", version())
        .replace("@URL_QUOTED@", shlex.quote(url))
        .replace("@URL@", url)
    )


def manifest() -> dict:
    return {
        "version": version(),
        "files": [{"name": f.name, "sha256": f.sha256, "size": len(f.content)} for f in kit_files()],
    }
