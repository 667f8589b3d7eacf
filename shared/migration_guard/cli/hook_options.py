"""What the node installer works with: its options (checked), what it finds on a node, the steps it
plans, and the names and modes it uses. Pure data; ``hook_chain``, ``hook_plan`` and ``hook_node``
build on it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from migration_guard.errors import ConfigError, GuardError

SCRIPT_NAME = "migration-guard-hook"
DEFAULT_STORAGE = "local"
DEFAULT_CONFIG_DIR = Path("/etc/migration-guard")
CONFIG_NAME = "hook.conf"
CHAIN_NAME = "chain.conf"
CONFIG_KEYS = ("url", "token_file", "token", "timeout", "mode", "fail", "ca_file", "node")
#: hook.conf and the token file: read by root only
SECRET_MODE = 0o600

_VMID = re.compile(r"^[1-9][0-9]{2,8}$")


class InstallError(GuardError):
    """The installer cannot go on; the message says what to do."""

    code = "install-error"


# --- data ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstallOptions:
    storage: str = DEFAULT_STORAGE
    snippets_dir: Path | None = None
    config_dir: Path = DEFAULT_CONFIG_DIR
    chain_file: Path | None = None
    url: str | None = None
    token_file: str | None = None
    mode: str | None = None
    fail: str | None = None
    timeout: str | None = None
    ca_file: str | None = None
    #: None: attach nothing; ("all",): every VM of this node; else VMIDs
    attach: tuple[str, ...] | None = None
    dry_run: bool = False

    @property
    def volid(self) -> str:
        return f"{self.storage}:snippets/{SCRIPT_NAME}"

    @property
    def chain_path(self) -> Path:
        return self.chain_file or self.config_dir / CHAIN_NAME


@dataclass(frozen=True, slots=True)
class ChainEntry:
    vmid: str
    path: str
    volid: str


@dataclass(frozen=True, slots=True)
class NodeState:
    """What the installer found on the node."""

    snippets_dir: Path
    script_bytes: bytes | None
    script_mode: int | None
    config_text: str | None
    chain_text: str | None
    chain_link: str | None  # readlink of config_dir/chain.conf when it is a symlink
    #: VMID -> current hookscript volid ("" when none), for the VMs that matter
    hookscripts: Mapping[str, str]
    #: volid -> absolute path for previous hookscripts (from pvesm path)
    previous_paths: Mapping[str, str] = field(default_factory=dict)
    #: what config_dir/chain.conf holds today when that is not the chain file (a regular file, or
    #: a link to another file): merged into the chain file before the link replaces it
    linked_chain_text: str | None = None
    #: path -> (mode, owner uid) of hook.conf and the token file, as found
    secrets: Mapping[Path, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Step:
    """One change. ``kind``: write-file, symlink, fix-mode, set-hookscript, delete-hookscript."""

    kind: str
    summary: str
    path: Path | None = None
    content: bytes = b""
    #: None: leave the mode as the file system gives it (pmxcfs has no chmod)
    mode: int | None = 0o644
    vmid: str = ""
    volid: str = ""
    #: write-file of a text file: its content before (None: it does not exist), for the diff
    before: bytes | None = None
    diff: bool = False


def parse_kv(text: str, sep: str = "=") -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, found, value = line.partition(sep)
        if found:
            out.setdefault(key.strip(), value.strip())
    return out


def is_ours(volid: str) -> bool:
    return volid.rsplit("/", 1)[-1] == SCRIPT_NAME


def check_options(opts: InstallOptions) -> None:
    if opts.mode and opts.mode not in ("enforce", "warn", "off"):
        raise ConfigError(f"--mode {opts.mode!r}: use enforce, warn or off")
    if opts.fail and opts.fail not in ("open", "closed"):
        raise ConfigError(f"--fail {opts.fail!r}: use open or closed")
    if opts.url and not re.match(r"^https?://[^/\s@]+", opts.url):
        raise ConfigError(f"--url {opts.url!r}: expected http(s)://host[:port]")
    if opts.timeout:
        try:
            if not 0 < float(opts.timeout) <= 120:
                raise ValueError
        except ValueError:
            raise ConfigError(f"--timeout {opts.timeout!r}: seconds between 0 and 120") from None
    for option, value in (
        ("--chain-file", opts.chain_file),
        ("--token-file", opts.token_file),
        ("--ca-file", opts.ca_file),
    ):
        if value is not None and not Path(value).is_absolute():
            raise ConfigError(
                f"{option} {value}: give an absolute path (e.g. {Path(value).absolute()}): "
                "the hook runs with another working directory, where a relative path points "
                "nowhere"
            )
    if not re.match(r"^[A-Za-z][A-Za-z0-9_.-]*$", opts.storage):
        raise ConfigError(f"--storage {opts.storage!r} is not a Proxmox storage name")
    for vmid in opts.attach or ():
        if vmid != "all" and not _VMID.match(vmid):
            raise ConfigError(f"--attach {vmid!r}: give `all` or VMIDs (100-999999999)")
    if opts.attach and "all" in opts.attach and len(opts.attach) > 1:
        raise ConfigError("--attach: give either `all` or VMIDs, not both")
