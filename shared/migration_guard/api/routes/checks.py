"""The verdicts: may a VM live-migrate to a node (the hot path), and to which nodes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from migration_guard.api import deps
from migration_guard.api.deps import VMID_PATTERN, VMID_TEXT, Authorize
from migration_guard.api.errors import JSON, UNKNOWN_503, FieldError, json_response, responses
from migration_guard.api.models import TargetsBody, VerdictBody
from migration_guard.service.guard import GuardService


def router(service: GuardService, authorize: Authorize) -> APIRouter:
    api = APIRouter()

    @api.get(
        "/v1/vms/{vmid}/check",
        summary="Can the VM live-migrate to the target node?",
        response_model=None,
        responses={
            **responses(VerdictBody, "the verdict (allow, deny or unknown) with its reasons"),
            503: {"model": VerdictBody, "description": UNKNOWN_503},
        },
        openapi_extra={
            "security": [{"bearer": []}],
            "parameters": [
                deps.VMID_PATH,
                deps.query("target", "the target node", required=True, schema=deps.NODE_SCHEMA),
                deps.query("target_cluster", "the target's cluster (cross-cluster)", schema=deps.NODE_SCHEMA),
                deps.query("source_cluster", "the VM's cluster (cross-cluster)", schema=deps.NODE_SCHEMA),
            ],
        },
    )
    async def check(request: Request) -> Response:
        # the hot path: auth and parameters by hand (FastAPI's dependency and Query machinery
        # costs more than the warm check itself); same errors as the other routes
        await authorize(request)
        target = request.query_params.get("target")
        if not target:
            raise FieldError("target", "target: the target node is required, e.g. ?target=pve2")
        vmid, target = deps.vmid(request.path_params["vmid"]), deps.node_name(target, "target")
        clusters = request.query_params.get("target_cluster"), request.query_params.get("source_cluster")
        if any(clusters):  # cross-cluster
            target_cluster = deps.node_name(clusters[0], "target_cluster") if clusters[0] else None
            source_cluster = deps.node_name(clusters[1], "source_cluster") if clusters[1] else None
            outcome = await service.across().check(vmid, target, target_cluster, source_cluster)
        else:
            outcome = await service.check(vmid, target)
        return Response(outcome.json_bytes(), status_code=outcome.status, media_type=JSON)

    @api.get(
        "/v1/vms/{vmid}/targets",
        dependencies=[Depends(authorize)],
        response_model=None,
        responses=responses(TargetsBody, "the verdict of every other node as a target"),
    )
    async def targets(
        vmid: str = Path(description=VMID_TEXT, pattern=VMID_PATTERN),
        all_clusters: bool = Query(False, description="every cluster the service reads"),
        source_cluster: str | None = Query(None, description="the VM's cluster (cross-cluster)"),
    ) -> Response:
        number = deps.vmid(vmid)
        if all_clusters or source_cluster:  # every cluster the service reads
            name = deps.node_name(source_cluster, "source_cluster") if source_cluster else None
            return json_response(await service.across().targets(number, name))
        return json_response(await service.targets(number))

    return api
