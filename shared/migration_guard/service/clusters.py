"""The Proxmox clusters the service reads (the questions that span them: ``cluster_set``).

Which clusters: the default one (the single-cluster settings
``MIGRATION_GUARD_PVE_*``, unchanged) and the others listed in the file named by
``MIGRATION_GUARD_CLUSTERS_FILE`` (JSON, or TOML when the name ends in ``.toml``).

File format (JSON shown; TOML takes the same keys as ``[[clusters]]`` tables)::

    {"clusters": [
      {"name": "clusterB", "host": "pveb1.example.org:8006", "user": "guard@pve",
       "token_name": "check", "token_value_file": "/etc/migration-guard/clusterB.token",
       "verify_ssl": "/etc/migration-guard/clusterB-ca.pem", "timeout": 5}
    ]}

``token_value`` may stand in for ``token_value_file`` (not recommended: the file then holds a
secret). ``verify_ssl`` is true, false or the path of that cluster's CA file (its
/etc/pve/pve-root-ca.pem). Every problem stops start-up with one line naming the file and entry.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from migration_guard.errors import ConfigError
from migration_guard.service.settings import Settings

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_KEYS = {"name", "host", "user", "token_name", "token_value", "token_value_file", "verify_ssl", "timeout"}


@dataclass(frozen=True, slots=True)
class ClusterEndpoint:
    """How to read one cluster. ``token_value`` never shows in repr."""

    name: str
    host: str
    user: str
    token_name: str
    token_value: str = field(repr=False)
    verify_ssl: bool | str = True
    timeout: float = 5.0
    default: bool = False


def how_to_add(name: str = "") -> str:
    """The operator sentence for a cluster the service does not read."""
    return (
        f"add {name or 'that cluster'} (name, host, user, token_name, token_value_file) to the file "
        "named by MIGRATION_GUARD_CLUSTERS_FILE and restart the service"
    )


def default_endpoint(settings: Settings) -> ClusterEndpoint:
    return ClusterEndpoint(
        name=settings.pve_cluster_name,
        host=settings.pve_host,
        user=settings.pve_user,
        token_name=settings.pve_token_name,
        token_value=settings.pve_token_value.get_secret_value(),
        verify_ssl=settings.verify_ssl,
        timeout=settings.pve_timeout,
        default=True,
    )


def endpoints(settings: Settings) -> tuple[ClusterEndpoint, ...]:
    """The default cluster first, then the clusters file's entries (none without the setting)."""
    first = default_endpoint(settings)
    path = getattr(settings, "clusters_file", "") or ""
    if not path:
        return (first,)
    others = load_clusters_file(path, default_timeout=settings.pve_timeout)
    for other in others:
        if other.name == first.name:
            raise ConfigError(
                f"{path}: cluster {other.name!r} is the default cluster's name "
                "(MIGRATION_GUARD_PVE_CLUSTER_NAME); give the other cluster another name"
            )
    return (first, *others)


def load_clusters_file(path: str | Path, *, default_timeout: float = 5.0) -> tuple[ClusterEndpoint, ...]:
    """The entries of a clusters file. Raises ConfigError (one line, naming file and entry)."""
    path = Path(path)
    where = f"MIGRATION_GUARD_CLUSTERS_FILE {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise ConfigError(f"{where}: not valid {kind} ({exc})") from None
    entries = data.get("clusters") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f'{where}: expected {{"clusters": [ ... ]}}, a list of clusters')
    out: list[ClusterEndpoint] = []
    seen: set[str] = set()
    for n, entry in enumerate(entries, 1):
        endpoint = _entry(entry, f"{where}, cluster #{n}", path.parent, default_timeout)
        if endpoint.name in seen:
            raise ConfigError(f"{where}: cluster name {endpoint.name!r} appears twice")
        seen.add(endpoint.name)
        out.append(endpoint)
    return tuple(out)


def _entry(entry: object, where: str, base: Path, default_timeout: float) -> ClusterEndpoint:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object with name, host, user, token_name, token_value_file")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    name = str(entry.get("name") or "")
    if not NAME.match(name):
        raise ConfigError(f"{where}: name {name!r} must be letters, digits, '.', '_' or '-'")
    where = f"{where} ({name})"
    for key in ("host", "user", "token_name"):
        if not str(entry.get(key) or "").strip():
            raise ConfigError(f"{where}: {key} is missing")
    host = str(entry["host"]).strip()
    if host.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: host {host!r}: give host[:port] without https://")
    token = str(entry.get("token_value") or "")
    token_file = str(entry.get("token_value_file") or "")
    if token and token_file:
        raise ConfigError(f"{where}: give token_value or token_value_file, not both")
    if token_file:
        file = Path(token_file) if Path(token_file).is_absolute() else base / token_file
        try:
            token = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{where}: token_value_file {file} cannot be read ({exc.strerror or exc})"
            ) from None
    if not token:
        raise ConfigError(f"{where}: token_value_file (or token_value) is missing or empty")
    verify = _verify(entry.get("verify_ssl", True), where, base)
    try:
        timeout = float(entry.get("timeout", default_timeout))
        if not 0 < timeout <= 120:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: timeout must be seconds between 0 and 120") from None
    return ClusterEndpoint(
        name=name,
        host=host,
        user=str(entry["user"]).strip(),
        token_name=str(entry["token_name"]).strip(),
        token_value=token,
        verify_ssl=verify,
        timeout=timeout,
    )


def _verify(value: object, where: str, base: Path) -> bool | str:
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in ("true", "1", "yes", "on", ""):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    path = Path(text) if Path(text).is_absolute() else base / text
    if not path.is_file():
        raise ConfigError(f"{where}: verify_ssl {text!r} is neither true/false nor an existing CA file")
    return str(path)


def reader_for(endpoint: ClusterEndpoint, settings: Settings):
    """A cluster reader (proxmoxer) for ``endpoint``, with the CA bundle and proxy variables of
    the environment as ``settings`` read them."""
    from migration_guard.cluster.reader import ClusterReader, split_host

    return ClusterReader(
        name=endpoint.name,
        host=endpoint.host,
        user=endpoint.user,
        token_name=endpoint.token_name,
        token_value=endpoint.token_value,
        verify_ssl=endpoint.verify_ssl,
        timeout=endpoint.timeout,
        ca_bundle=settings.ca_bundle,
        proxies=settings.proxies_for(*split_host(endpoint.host)),
    )
