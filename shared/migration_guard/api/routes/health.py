"""The service's own health: liveness (/healthz), readiness (/readyz) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from migration_guard.api.deps import Authorize
from migration_guard.api.errors import AuthError, json_response
from migration_guard.api.models import Healthz, Readyz
from migration_guard.errors import GuardError
from migration_guard.service.guard import GuardService
from migration_guard.service.metrics import CONTENT_TYPE


async def _reach(one: GuardService) -> str:
    """The empty string when the cluster's API answers the node list in time, else why not."""
    try:
        await asyncio.wait_for(one._run(one.reader.nodes), one.settings.pve_timeout + 1)
    except (TimeoutError, GuardError) as exc:
        return str(exc) or "no answer in time"
    return ""


class Readiness:
    """Redis and every cluster's API asked once per MIGRATION_GUARD_READYZ_CACHE_S: a load
    balancer polling /readyz does not call Proxmox on each poll."""

    def __init__(self, service: GuardService) -> None:
        self.service = service
        self._expiry = 0.0
        self._answer: tuple[dict, int] | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> tuple[dict, int]:
        async with self._lock:  # one probe at a time; the polls meanwhile share its answer
            if self._answer is not None and time.monotonic() < self._expiry:
                return self._answer
            answer = await self.probe()
            self._expiry, self._answer = time.monotonic() + self.service.settings.readyz_cache_s, answer
            return answer

    async def probe(self) -> tuple[dict, int]:
        service = self.service
        # the other clusters of MIGRATION_GUARD_CLUSTERS_FILE: one down degrades, it does not
        # make the service not ready (the nodes of this cluster still get their answers)
        others = [s for s in service.across().services.values() if s is not service]
        redis_ok, detail, *other_errors = await asyncio.gather(
            service.store.ping(), _reach(service), *(_reach(s) for s in others)
        )
        proxmox = "unreachable" if detail else "ok"
        others_down = any(other_errors)
        body: dict[str, object] = {
            "status": "ready"
            if proxmox == "ok" and redis_ok and not others_down
            else ("degraded" if proxmox == "ok" else "not ready"),
            "degraded": not redis_ok or others_down,
            "store": service.store.kind,
            "redis": "ok" if redis_ok else "down",
            "proxmox": proxmox,
            "events_pending": service.events.pending,
        }
        if not redis_ok:
            body["redis_error"] = service.store.last_error
        if detail:
            body["proxmox_error"] = detail
        if others:
            body["clusters"] = {
                s.cluster: f"unreachable: {error}" if error else "ok"
                for s, error in zip(others, other_errors, strict=True)
            }
        return body, 200 if proxmox == "ok" else 503


def router(service: GuardService, authorize: Authorize) -> APIRouter:
    api = APIRouter()
    readiness = Readiness(service)

    @api.get("/healthz", response_model=None, responses={200: {"model": Healthz, "description": "alive"}})
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @api.get(
        "/readyz",
        response_model=None,
        responses={
            200: {
                "model": Readyz,
                "description": "ready or degraded; the details only with a valid bearer token",
            },
            503: {"model": Readyz, "description": "not ready: this cluster's Proxmox API does not answer"},
        },
    )
    async def readyz(request: Request) -> Response:
        body, status = await readiness()
        try:
            await authorize(request)
        except AuthError:  # without the token: the state only, no hosts, token ids or errors
            return json_response({"status": body["status"]}, status)
        return json_response({**body, "events_pending": service.events.pending}, status)

    @api.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text format",
                "content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics() -> Response:
        # the two gauges of costly reports: renewed every few minutes, a scrape waits 2 s at most
        await asyncio.gather(
            service.coverage.latest.fresh(max_age_s=300, wait_s=2.0),  # migration_guard_unguarded_vms
            service.ha.latest.fresh(max_age_s=300, wait_s=2.0),  # migration_guard_ha_risks
        )
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    return api
