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
    ConfigError,
    ConflictError,
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
#: a Proxmox node name (pve-common's pve-node format, as the API checks it)
NODE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9.-]{0,62}\Z")
#: an override id as the service makes them (a ULID)
OVERRIDE_ID = re.compile(r"\A[0-9A-HJKMNP-TV-Z]{26}\Z")

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
    if status == 409:
        return ConflictError(message or f"{url}: conflict", code=code or None)
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
        if token and not all("!" <= c <= "~" for c in token):
            # an HTTP library's complaint would quote the header, token and all
            raise ConfigError(
                "the service token (MIGRATION_GUARD_TOKEN or the token file) holds a space, a line "
                "break or a non-ASCII character: copy the token again, alone on one line"
            )
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

    def recommendation(
        self,
        nodes: list[str] | tuple[str, ...] | None = None,
        *,
        add: list[str] | tuple[str, ...] = (),
        remove: list[str] | tuple[str, ...] = (),
        hosts: list[dict] | tuple[dict, ...] = (),
    ) -> dict:
        """A RecommendationWhatIfBody: ``recommended`` (null when no type runs on every node); with
        ``add`` (shipped CPUs by name), ``remove`` (nodes) or ``hosts`` (host data, sent as POST):
        ``what_if``, the cluster after that change."""
        if hosts:
            body: dict[str, Any] = {"nodes": list(nodes) if nodes else None}
            body.update(add=list(add), remove=list(remove), hosts=list(hosts))
            return self._request("POST", "/v1/cluster/recommendation", json=body)
        params: dict[str, Any] = {"nodes": ",".join(nodes)} if nodes else {}
        if add:
            params["add"] = list(add)
        if remove:
            params["remove"] = list(remove)
        return self._request("GET", "/v1/cluster/recommendation", params=params or None)

    def cpus(self) -> list[dict]:
        """The ``cpus`` of a CpusBody: the real CPUs an imagined node of a what-if may have."""
        return self._request("GET", "/v1/cpus")["cpus"]

    def drift(self, limit: int = 20, node: str | None = None) -> dict:
        """A DriftBody: ``events``, the latest changes of the nodes' CPU facts, newest first."""
        params: dict[str, Any] = {"limit": int(limit)}
        if node:
            params["node"] = node
        return self._request("GET", "/v1/drift", params=params)

    def matrix(self, compact: bool = False) -> dict:
        """A MatrixAnswer: ``vms``, each with its verdict per target node; ``compact``: each distinct
        cell once in ``cells`` and each row's ``targets`` as indexes (a tenth the size)."""
        return self._request("GET", "/v1/matrix", params={"format": "compact"} if compact else None)

    def custom_model(self, nodes: list[str] | tuple[str, ...] | None = None, name: str | None = None) -> dict:
        """A CustomModelBody: the custom CPU model every chosen node (default: every online one) runs."""
        params: dict[str, str] = {}
        if nodes:
            params["nodes"] = ",".join(nodes)
        if name:
            params["name"] = name
        return self._request("GET", "/v1/cluster/custom-model", params=params or None)

    def create_custom_model(
        self, nodes: list[str] | tuple[str, ...] | None = None, name: str | None = None
    ) -> dict:
        """Create that model in Proxmox (the service's token needs Mapping.Modify on /mapping/cpu):
        a CustomModelBody with ``created``."""
        body: dict[str, Any] = {"nodes": list(nodes) if nodes else None}
        if name:
            body["name"] = name
        return self._request("POST", "/v1/cluster/custom-model", json=body)

    def coverage(self) -> dict:
        """A CoverageBody: ``unguarded`` VMs, ``missing_volume`` (hookscript file missing on nodes)."""
        return self._request("GET", "/v1/coverage")

    # --- a node's maintenance and HA --------------------------------------------------------------

    def evacuation(self, node: str) -> dict:
        """An EvacuationBody: ``summary``, ``stuck`` (why and fix), ``vms`` with their targets."""
        return self._request("GET", f"/v1/nodes/{_node(node)}/evacuation")

    def ha_risks(self) -> dict:
        """A HaRisksBody: ``source`` (rules, groups, none), ``risks`` (the HA VMs with nodes HA may
        start them on that cannot run them), ``checked_at``."""
        return self._request("GET", "/v1/ha/risks")

    # --- audited one-time overrides -------------------------------------------------------------

    def request_override(
        self, vmid: int, target: str, reason: str, ttl_s: int = 900, requested_by: str = ""
    ) -> dict:
        """An OverrideBody, ``pending`` until a second person approves it."""
        body = {
            "vmid": int(vmid),
            "target": target,
            "reason": reason,
            "ttl_s": int(ttl_s),
            "requested_by": requested_by,
        }
        return self._request("POST", "/v1/overrides", json=body)

    def approve_override(self, override_id: str, approved_by: str) -> dict:
        """The approved OverrideBody; ConflictError (409) when ``approved_by`` asked for it, or it
        expired, was spent or rejected (``code`` says which: override-self-approval, ...)."""
        path = f"/v1/overrides/{_override_id(override_id)}/approve"
        return self._request("POST", path, json={"approved_by": approved_by})

    def reject_override(self, override_id: str, rejected_by: str) -> dict:
        """The rejected OverrideBody; ConflictError (409) when it was spent or expired already."""
        path = f"/v1/overrides/{_override_id(override_id)}/reject"
        return self._request("POST", path, json={"rejected_by": rejected_by})

    def overrides(self, limit: int = 100) -> list[dict]:
        """The ``overrides`` of an OverridesBody, newest first."""
        return self._request("GET", "/v1/overrides", params={"limit": int(limit)})["overrides"]


def _node(text: str) -> str:
    """A node name, checked before it goes into a path."""
    if not NODE.match(str(text)):
        raise InputError(f"{str(text)[:70]!r} is not a Proxmox node name")
    return str(text)


def _override_id(text: str) -> str:
    """An override id, checked before it goes into a path (no other path reachable through it)."""
    value = str(text).strip().upper()
    if not OVERRIDE_ID.match(value):
        raise InputError(
            f"{str(text)[:40]!r} is not an override id (26 letters and digits, as "
            "migration-guard override list shows)"
        )
    return value
