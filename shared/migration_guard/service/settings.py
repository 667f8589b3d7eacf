"""The service's one settings object: environment variables ``MIGRATION_GUARD_*`` and, with
``--config FILE``, the same keys in an env file (the environment wins).

A missing or wrong setting stops start-up with one line naming it (ConfigError). Tokens are
``SecretStr``: their repr and str never show the value, so they cannot leak into logs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import requests
from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from migration_guard.errors import ConfigError
from migration_guard.store.redis_store import MEMORY_URL, SENTINEL_SCHEME

PREFIX = "MIGRATION_GUARD_"

#: what each setting is, for the one-line error an operator reads
_HELP = {
    "pve_host": "the Proxmox host to read, e.g. pve1.example.com:8006",
    "pve_user": "the Proxmox user of the API token, e.g. guard@pve",
    "pve_token_name": "the API token id, e.g. check (from guard@pve!check)",
    "pve_token_value": "the API token secret (a UUID)",
    "pve_verify_ssl": "true, false, or the path of the cluster's CA file (/etc/pve/pve-root-ca.pem)",
    "pve_timeout": "seconds to wait for one Proxmox API call, e.g. 5",
    "redis_url": "e.g. redis://127.0.0.1:6379/0, rediss://host:6380/0 (TLS), "
    "redis+sentinel://host:26379/mymaster/0 (or memory:// for an in-process store that forgets "
    "everything at restart)",
    "workers": "how many server processes share the port, e.g. 2 (they need Redis)",
    "api_tokens": "comma-separated bearer tokens the API accepts",
    "listen": "host:port to serve on, e.g. 127.0.0.1:8080",
    "clusters_file": "a JSON/TOML file listing the other clusters to read (docs/cross-cluster.md)",
    "max_body_bytes": "the largest request body the API reads, in bytes, e.g. 65536",
    "readyz_cache_s": "seconds one /readyz answer is reused, e.g. 3",
    "state_dir": "a folder the service may write, e.g. /var/lib/migration-guard",
    "web_session_ttl_s": "seconds a dashboard login lasts, 60 to 604800, e.g. 28800",
    "cpu_models_conf": "a copy of the cluster's /etc/pve/virtual-guest/cpu-models.conf (custom CPU models)",
    "node_phys_bits": "each node's physical address width, e.g. pve1=46,pve2=39 "
    "(the 'address sizes' line of its /proc/cpuinfo)",
}

#: where the service keeps vetoes queued while Redis is down, unless MIGRATION_GUARD_STATE_DIR says
DEFAULT_STATE_DIR = "/var/lib/migration-guard"
#: the explicit opt-in to the in-process store outside the demo


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", case_sensitive=False)

    pve_host: str = ""
    pve_user: str = ""
    pve_token_name: str = ""
    pve_token_value: SecretStr = SecretStr("")
    pve_verify_ssl: str = "true"
    pve_timeout: float = Field(default=5.0, gt=0, le=120)
    #: the name this cluster goes by in verdicts (source_cluster / target_cluster)
    pve_cluster_name: str = "default"
    redis_url: str = ""
    api_tokens: SecretStr = SecretStr("")
    listen: str = "127.0.0.1:8080"
    #: server processes sharing the port (``serve --workers``); more than one needs Redis, which
    #: they share: the cache (one Proxmox read per key between them), decisions and veto events
    workers: int = Field(default=1, ge=1, le=64)
    #: cache lifetimes, seconds
    cache_node_ttl: float = Field(default=300.0, ge=0)
    cache_vm_ttl: float = Field(default=5.0, ge=0)
    cache_list_ttl: float = Field(default=10.0, ge=0)
    #: how many decisions the audit log keeps
    decisions_keep: int = Field(default=10_000, ge=100)
    #: threads that wait for Proxmox answers (one per call in flight)
    proxmox_workers: int = Field(default=48, ge=1, le=1024)
    #: at most this many memoised verdicts per kind (warm checks, matrix cells) before they are dropped
    verdict_memo_cap: int = Field(default=20_000, ge=100)
    #: run Proxmox's own migrate precondition check (needs VM.Migrate on the token)
    precheck: bool = True
    #: keep the node list, node CPUs and the VM list fresh in the background (``serve``), so a
    #: check waits only for its own VM's facts
    inventory_refresh: bool = True
    #: the other clusters the service reads (cross-cluster checks); "" = only this one
    clusters_file: str = ""
    #: the largest request body any route reads (larger: 413 before the body is read)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024 * 1024)
    #: seconds one /readyz answer is reused, so polling it does not call Proxmox each time
    readyz_cache_s: float = Field(default=3.0, ge=0, le=300)
    #: the service's own files: vetoes and decisions queued while Redis is down (spool), kept
    #: across restarts until Redis takes them
    state_dir: str = DEFAULT_STATE_DIR
    #: seconds a dashboard login (its session cookie and the session in the store) lasts
    web_session_ttl_s: float = Field(default=8 * 3600, ge=60, le=7 * 86400)
    #: the cluster's cpu-models.conf (custom CPU models) where Proxmox has no
    #: /cluster/qemu/custom-cpu-models (pve-manager before 9.1.14); "" = none
    cpu_models_conf: str = ""
    #: node -> physical address width in bits ("pve1=46,pve2=39"), before the recorded CPUs
    node_phys_bits: str = ""

    @field_validator("cpu_models_conf")
    @classmethod
    def _models_conf(cls, value: str) -> str:
        value = value.strip()
        if value and not Path(value).is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @field_validator("node_phys_bits")
    @classmethod
    def _phys_bits(cls, value: str) -> str:
        parse_widths(value)
        return value

    @property
    def phys_bits_by_node(self) -> dict[str, int]:
        return parse_widths(self.node_phys_bits)

    def cpu_models_text(self) -> str | None:
        """The text of ``cpu_models_conf``, None when unset. Raises ConfigError."""
        if not self.cpu_models_conf:
            return None
        try:
            return Path(self.cpu_models_conf).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"MIGRATION_GUARD_CPU_MODELS_CONF {self.cpu_models_conf} cannot be read: "
                f"{getattr(exc, 'strerror', None) or 'not UTF-8 text'}"
            ) from exc

    @field_validator("pve_verify_ssl")
    @classmethod
    def _verify(cls, value: str) -> str:
        low = value.strip().lower()
        if low in ("true", "1", "yes", "on", ""):
            return "true"
        if low in ("false", "0", "no", "off"):
            return "false"
        if not Path(value).is_file():
            raise ValueError(f"{value} is neither true/false nor an existing CA file")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        value = value.strip()
        schemes = ("redis://", "rediss://", "unix://", SENTINEL_SCHEME)
        if value and value != MEMORY_URL and not value.startswith(schemes):
            raise ValueError(
                f"{value[:60]!r} is neither redis://, rediss://, unix://, {SENTINEL_SCHEME} nor {MEMORY_URL}"
            )
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("pve_host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip()
        if value.startswith(("http://", "https://")):
            raise ValueError("give host[:port] without https://")
        if value.count(":") == 1 and not value.rsplit(":", 1)[1].isdigit():
            raise ValueError(f"{value} has a port that is not a number")
        return value

    #: requests' CA bundle variable (REQUESTS_CA_BUNDLE, else CURL_CA_BUNDLE), read once here
    _ca_bundle: str | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        self._ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None

    # --- derived -------------------------------------------------------------------------------

    @property
    def ca_bundle(self) -> str | None:
        """The CA file a reader with ``verify_ssl`` true trusts (requests' own variable)."""
        return self._ca_bundle

    @staticmethod
    def proxies_for(host: str, port: int) -> dict[str, str]:
        """The proxies for Proxmox at ``host:port`` from HTTPS_PROXY / ALL_PROXY / NO_PROXY (and
        their lowercase forms), with requests' own meaning; read when a reader is made, so that
        requests need not read them on every call."""
        return dict(requests.utils.get_environ_proxies(f"https://{host}:{port}/"))

    @property
    def verify_ssl(self) -> bool | str:
        if self.pve_verify_ssl == "true":
            return True
        if self.pve_verify_ssl == "false":
            return False
        return self.pve_verify_ssl

    def bearer_tokens(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.api_tokens.get_secret_value().split(",") if t.strip())

    def require_proxmox(self) -> None:
        """Stop with one line when a Proxmox setting the production service needs is missing."""
        for key in ("pve_host", "pve_user", "pve_token_name"):
            if not getattr(self, key):
                raise ConfigError(f"{PREFIX}{key.upper()} is not set: {_HELP[key]}")
        if not self.pve_token_value.get_secret_value():
            raise ConfigError(f"{PREFIX}PVE_TOKEN_VALUE is not set: {_HELP['pve_token_value']}")
        if not self.bearer_tokens():
            raise ConfigError(f"{PREFIX}API_TOKENS is not set: {_HELP['api_tokens']}")


def parse_widths(value: str) -> dict[str, int]:
    """``pve1=46,pve2=39`` -> {"pve1": 46, "pve2": 39}. Raises ValueError naming the bad entry."""
    widths: dict[str, int] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        node, sep, bits = item.partition("=")
        if not sep or not node.strip() or not bits.strip().isdigit() or not 8 <= int(bits) <= 64:
            raise ValueError(f"{item[:60]!r} is not NODE=BITS with BITS from 8 to 64")
        widths[node.strip()] = int(bits)
    return widths


def split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def load_settings(config_file: str | None = None, **overrides: Any) -> Settings:
    """Read the settings; ``config_file`` is an env file with the same keys. Raises ConfigError
    with one line naming the bad setting."""
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"--config {config_file}: no such file")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"--config {config_file}: not readable by this user")
    try:
        return Settings(_env_file=config_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        first = exc.errors()[0]
        key = str(first["loc"][0]) if first.get("loc") else "?"
        name = f"{PREFIX}{key.upper()}"
        message = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
        hint = _HELP.get(key)
        raise ConfigError(f"{name} is wrong: {message}" + (f" (expected {hint})" if hint else "")) from None
