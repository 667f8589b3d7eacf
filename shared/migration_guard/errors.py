"""The project's error types. Every message is a sentence an operator can act on.

Library errors (proxmoxer, requests, redis, httpx) are mapped to these once, at the
boundary that calls the library; nothing above that boundary sees a library exception.
"""

from __future__ import annotations


class GuardError(Exception):
    """Base of every error this project raises on purpose. ``str(err)`` is the operator message."""

    #: stable machine-readable code (used in JSON error bodies and verdict reasons)
    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


# --- bad input (CLI exit 2, HTTP 422) -------------------------------------------------


class InputError(GuardError):
    """The caller gave something we cannot use (a bad ``cpu:`` value, an unreadable host file)."""

    code = "bad-input"


class CpuSpecError(InputError):
    """A ``cpu:`` value that Proxmox would not accept; the message names the bad part."""

    code = "bad-cpu-spec"


class UnknownModelError(CpuSpecError):
    code = "unknown-model"


class HostDataError(InputError):
    """A host description (/proc/cpuinfo text or JSON) that cannot be read."""

    code = "bad-host"


class ConfigError(GuardError):
    """A missing or wrong setting. The message names the setting."""

    code = "bad-config"


# --- things that are not there (HTTP 404) ----------------------------------------------


class NotFoundError(GuardError):
    code = "not-found"


class UnknownVmError(NotFoundError):
    code = "unknown-vm"


class UnknownNodeError(NotFoundError):
    code = "unknown-node"


class UnknownClusterError(NotFoundError):
    code = "unknown-cluster"


# --- a state that forbids the request (HTTP 409) ----------------------------------------


class ConflictError(GuardError):
    """The request is well-formed but the thing's state forbids it (an override approved by its own
    requester, expired, or already spent)."""

    code = "conflict"


# --- the Proxmox API (mapped once in shared/migration_guard/cluster/reader.py) -----------------------------


class ProxmoxError(GuardError):
    code = "proxmox-error"


class ProxmoxUnreachable(ProxmoxError):
    """Connection refused, TLS failure, timeout."""

    code = "cluster-unreachable"


class NodeUnreachable(ProxmoxUnreachable):
    """The API answered, but could not reach one node (595: the node is down or cut off).
    Proxmox itself is healthy: other facts are still asked for, not answered from the cache."""


class ProxmoxAuthError(ProxmoxError):
    """401: the token is wrong, expired or revoked."""

    code = "proxmox-auth"


class ProxmoxPermissionError(ProxmoxError):
    """403: the token lacks a privilege for this call."""

    code = "proxmox-permission"


class ProxmoxBadAnswer(ProxmoxError):
    """A 200 answer that is not what Proxmox sends for that path: not JSON (a proxy's HTML error
    page, a truncated body), or ``data`` null, a list or a string where an object is expected.
    Never read as "no value": a check answers ``unknown`` with the reason."""

    code = "proxmox-bad-answer"


class ProxmoxNotFound(ProxmoxError):
    code = "proxmox-not-found"


class ProxmoxNotImplemented(ProxmoxError):
    """501: this Proxmox release does not have the endpoint."""

    code = "proxmox-not-implemented"


# --- the store (Redis or the embedded one) --------------------------------------------


class StoreUnavailable(GuardError):
    code = "store-unavailable"


# --- the service, as seen by its clients (CLI, bot) -----------------------------------


class ServiceError(GuardError):
    code = "service-error"


class ServiceUnavailable(ServiceError):
    code = "service-unavailable"
