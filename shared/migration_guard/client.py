"""The one client of the compatibility service's HTTP API, used by the CLI and by the bot.

Connection failures become ServiceUnavailable; the API's JSON errors become the project's
errors (404 UnknownVmError/UnknownNodeError/NotFoundError, 422 InputError, 401 ServiceError with
code "unauthorized", 503 ServiceUnavailable). A 503 that carries a verdict (cluster unreachable)
is returned as a verdict with ``verdict == "unknown"``, not raised.

Each method returns the answer's JSON as the API documents it (GET /openapi.json, the models of
migration_guard.api.models named below); a caller reads the documented fields, never guesses.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from migration_guard.errors import (
    GuardError,
    InputError,
    NotFoundError,
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

#: a Proxmox VM id as the pve-vmid format has it (pve-common PVE/JSONSchema.pm): 100 to 999999999,
#: ASCII digits, no leading zero. Checked before a VMID is sent: "00101" is no VM, not VM 101.
VMID = re.compile(r"\A[1-9][0-9]{2,8}\Z")


def error_from(status: int, body: Any, url: str) -> GuardError:
    """The project error for an API error answer."""
    error = body.get("error") if isinstance(body, dict) else None
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    if status == 404:
        return _NOT_FOUND.get(code, NotFoundError)(message or f"{url}: not found", code=code or None)
    if status in (400, 422):
        return InputError(message or f"{url}: bad input", code=code or None)
    if status == 401:
        return ServiceError(
            f"the service refused the token ({message or 'HTTP 401'}): check MIGRATION_GUARD_TOKEN",
            code="unauthorized",
        )
    if status in (502, 503, 504):
        return ServiceUnavailable(
            message or f"the service at {url} is unavailable (HTTP {status})", code=code or None
        )
    return ServiceError(message or f"the service at {url} failed (HTTP {status})", code=code or None)


class ServiceClient:
    def __init__(
        self,
        url: str,
        token: str = "",
        *,
        timeout: float = 10.0,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "migration-guard-client/1",
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": user_agent}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, verify=verify, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        json: dict | None = None,
        verdict_ok: bool = False,
    ) -> Any:
        try:
            answer = self._http.request(method, path, params=params, json=json)
        except httpx.TimeoutException:
            raise ServiceUnavailable(
                f"the migration-guard service at {self.url} did not answer in time"
            ) from None
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"the migration-guard service at {self.url} is unreachable ({exc or type(exc).__name__})"
            ) from None
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.status_code == 200 or (
            verdict_ok and answer.status_code == 503 and isinstance(body, dict) and "verdict" in body
        ):
            if body is None:
                raise ServiceError(f"the service at {self.url} sent an answer that is not JSON")
            return body
        raise error_from(answer.status_code, body, self.url)

    # --- the API ------------------------------------------------------------------------------

    def check(self, vmid: int, target: str, target_cluster: str | None = None) -> dict:
        """A VerdictBody (also for a 503: verdict unknown with the reason)."""
        params = {"target": target}
        if target_cluster:  # another cluster the service reads
            params["target_cluster"] = target_cluster
        return self._request("GET", f"/v1/vms/{int(vmid)}/check", params=params, verdict_ok=True)

    def targets(self, vmid: int, all_clusters: bool = False) -> dict:
        """A TargetsBody: ``targets``, one VerdictBody per other node."""
        params = {"all_clusters": "1"} if all_clusters else None
        return self._request("GET", f"/v1/vms/{int(vmid)}/targets", params=params)

    def decide(
        self, vmid: int, target: str, source: str | None = None, mode: str = "enforce", **extra: Any
    ) -> dict:
        """A DecisionBody: the verdict, recorded, with decision_id, exit and line."""
        body = {"vmid": int(vmid), "target": target, "source": source, "mode": mode}
        body.update({k: v for k, v in extra.items() if v is not None})
        return self._request("POST", "/v1/decisions", json=body, verdict_ok=True)

    def decisions(self, limit: int = 20, vmid: int | None = None) -> list[dict]:
        """The ``decisions`` of a DecisionsBody, newest first."""
        params: dict[str, Any] = {"limit": int(limit)}
        if vmid is not None:
            params["vmid"] = int(vmid)
        return self._request("GET", "/v1/decisions", params=params)["decisions"]

    def cluster(self) -> dict:
        """A ClusterView: ``nodes`` and ``rolling_upgrade``."""
        return self._request("GET", "/v1/cluster")

    def recommendation(self, nodes: list[str] | tuple[str, ...] | None = None) -> dict:
        """A RecommendationBody: ``recommended`` (null when no type runs on every node)."""
        params = {"nodes": ",".join(nodes)} if nodes else None
        return self._request("GET", "/v1/cluster/recommendation", params=params)

    def matrix(self) -> dict:
        """A MatrixBody: ``vms``, each with its verdict per target node."""
        return self._request("GET", "/v1/matrix")

    def coverage(self) -> dict:
        """A CoverageBody: ``unguarded`` VMs, ``missing_volume`` (hookscript file missing on nodes)."""
        return self._request("GET", "/v1/coverage")
