"""The routes' dependencies: the bearer-token check and the parameter checks (Proxmox's VM id
format, node names, the hook's time budget), with their OpenAPI descriptions."""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable

from fastapi import Request

from migration_guard.api.errors import AuthError, FieldError
from migration_guard.api.models import NODE_NAME

#: a VM id as Proxmox writes it: ASCII digits only (no sign, underscore, dot or other scripts' digits)
DIGITS = re.compile(r"\A[0-9]+\Z")
#: Proxmox's VM id (pve-common PVE/JSONSchema.pm, format pve-vmid): 100 to 999999999, no leading zero
VMID_PATTERN = "^[1-9][0-9]{2,8}$"
VMID = re.compile(r"\A[1-9][0-9]{2,8}\Z")
VMID_TEXT = "the VM id: ASCII digits, 100 to 999999999, no leading zero (Proxmox's pve-vmid)"
#: the hookscript's time left for its answer, in milliseconds (the service answers before it)
BUDGET_HEADER = "X-Migration-Guard-Budget-Ms"

Authorize = Callable[[Request], Awaitable[None]]


def bearer(tokens: tuple[str, ...]) -> Authorize:
    """The dependency that lets a request through only with ``Authorization: Bearer <token>``,
    ``token`` one of ``tokens`` (MIGRATION_GUARD_API_TOKENS); else AuthError (401)."""
    token_bytes = tuple(t.encode() for t in tokens if t)

    async def authorize(request: Request) -> None:  # async: no thread hop per request
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise AuthError(
                "this API needs Authorization: Bearer <token> (one of MIGRATION_GUARD_API_TOKENS)"
            )
        given_b = given.strip().encode()
        ok = False
        for token in token_bytes:  # compare with every token: the time does not tell which one
            ok |= hmac.compare_digest(given_b, token)
        if not ok:
            raise AuthError("the bearer token is not one of MIGRATION_GUARD_API_TOKENS")

    return authorize


def node_name(value: str, field: str) -> str:
    if not NODE_NAME.match(value):
        raise FieldError(field, f"{field}: {value[:70]!r} is not a Proxmox node name")
    return value


def vmid(text: str) -> int:
    if not DIGITS.match(text):
        raise FieldError("vmid", f"vmid: {text[:30]!r} is not a VM id (ASCII digits, like 101)")
    if not VMID.match(text):
        raise FieldError(
            "vmid", f"vmid: {text[:30]} is not a Proxmox VM id (100 to 999999999, no leading zero)"
        )
    return int(text)


def budget(request: Request) -> float | None:
    """Seconds the caller still waits (``X-Migration-Guard-Budget-Ms``); None without the header
    or with a value that is not a positive number of milliseconds (then it is ignored)."""
    raw = request.headers.get(BUDGET_HEADER)
    if not raw:
        return None
    try:
        ms = float(raw)
    except ValueError:
        return None
    return ms / 1000 if 0 < ms <= 600_000 else None


# --- OpenAPI descriptions of the parameters the hot route reads by hand -------------------------

NODE_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$"}
VMID_PATH = {
    "name": "vmid",
    "in": "path",
    "required": True,
    "description": VMID_TEXT,
    "schema": {"type": "string", "pattern": VMID_PATTERN},
}


def query(name: str, description: str, *, required: bool = False, schema: dict | None = None) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema or {"type": "string"},
    }
