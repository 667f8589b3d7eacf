"""The bot's thin HTTP client of the compatibility service (never Proxmox).

Returns the service's JSON bodies as dicts; maps every httpx failure, once, to
``migration_guard.errors``: 404 bodies to UnknownVmError / UnknownNodeError / UnknownClusterError
(with the service's message), connection failures, timeouts, 502-504 to ServiceUnavailable,
anything else to ServiceError. A 503 that carries a verdict (the cluster is unreachable) is
a verdict "unknown", not an error.
The token is sent as a Bearer header and never logged.

Why not shared/migration_guard/client.py: the bot passes ``target_cluster`` (issue 6) and reads the raw
bodies of /v1/decisions and /targets; the shapes are the same.
"""

from __future__ import annotations

from typing import Any

import httpx

from migration_guard.errors import (
    GuardError,
    InputError,
    ServiceError,
    ServiceUnavailable,
    UnknownClusterError,
    UnknownNodeError,
    UnknownVmError,
)

_NOT_FOUND = {
    "unknown-vm": UnknownVmError,
    "unknown-node": UnknownNodeError,
    "unknown-cluster": UnknownClusterError,
}


class ServiceClient:
    def __init__(
        self,
        base_url: str,
        token: str = "",
        *,
        timeout: float = 20.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "migration-guard-bot"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    # --- the API -------------------------------------------------------------------------

    def check(self, vmid: int, target: str, target_cluster: str | None = None) -> dict[str, Any]:
        params = {"target": target}
        if target_cluster:
            params["target_cluster"] = target_cluster
        return self._get(f"/v1/vms/{int(vmid)}/check", params)

    def targets(self, vmid: int) -> dict[str, Any]:
        """Every other node of every cluster the service reads (one cluster: just its nodes)."""
        return self._get(f"/v1/vms/{int(vmid)}/targets", {"all_clusters": "1"})

    def decisions(self, limit: int = 10, vmid: int | None = None) -> dict[str, Any] | list[Any]:
        params: dict[str, Any] = {"limit": int(limit)}
        if vmid is not None:
            params["vmid"] = int(vmid)
        return self._get("/v1/decisions", params)

    def cluster(self) -> dict[str, Any]:
        return self._get("/v1/cluster")

    def recommendation(self, nodes: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
        params = {"nodes": ",".join(nodes)} if nodes else None
        return self._get("/v1/cluster/recommendation", params)

    # --- the boundary --------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        where = f"the migration-guard service at {self.base_url}"
        try:
            resp = self._http.get(path, params=params)
        except httpx.TimeoutException as exc:
            raise ServiceUnavailable(f"{where} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"{where} is unreachable ({type(exc).__name__})") from exc
        if resp.status_code < 400:
            try:
                return resp.json()
            except ValueError as exc:
                raise ServiceError(f"{where} answered {path} with something that is not JSON") from exc
        code, message = _error_of(resp)
        if resp.status_code == 503 and _is_verdict(resp):  # cluster unreachable: verdict "unknown"
            return resp.json()
        if resp.status_code == 404 and code in _NOT_FOUND:
            raise _NOT_FOUND[code](message or "not found")
        if resp.status_code in (400, 422):
            raise InputError(message or f"{where} refused the question (HTTP {resp.status_code})")
        if resp.status_code in (401, 403):
            raise ServiceError(
                f"{where} refused the bot's token (HTTP {resp.status_code}); check MIGRATION_GUARD_TOKEN",
                code="service-auth",
            )
        if resp.status_code in (502, 503, 504):
            raise ServiceUnavailable(
                f"{where} failed (HTTP {resp.status_code}){': ' + message if message else ''}"
            )
        err = ServiceError(message or f"{where} answered HTTP {resp.status_code}")
        if code:
            err.code = code
        raise err


def _is_verdict(resp: httpx.Response) -> bool:
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "verdict" in body


def _error_of(resp: httpx.Response) -> tuple[str, str]:
    try:
        body = resp.json()
    except ValueError:
        return "", ""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("code") or ""), str(err.get("message") or "")
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return "", body["detail"]
    return "", ""


__all__ = ["ServiceClient", "GuardError"]
