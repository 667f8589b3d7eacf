"""The test server's custom CPU models: ``GET`` and ``POST /cluster/qemu/custom-cpu-models``, as
pve-manager ``PVE/API2/Cluster/Qemu/CustomCPUModels.pm`` answers them (since pve-manager 9.1.14;
older: 501), from the scenario's ``custom_cpu_models`` (the cluster's
``/etc/pve/virtual-guest/cpu-models.conf``). Imports nothing of the engine."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from migration_guard.demo.pve_scenario import ApiError, ClusterState, privileges, pve_version, version_tuple

#: a custom model's properties (qemu-server PVE/QemuServer/CPUConfig.pm ``$cpu_fmt``, 9.2.6)
PROPS = ("flags", "guest-phys-bits", "hidden", "hv-vendor-id", "level", "phys-bits", "reported-model")
#: privileges that let a user see a model (``$can_see_mapping_privs``)
SEE = ("Mapping.Modify", "Mapping.Use", "Mapping.Audit")
#: pve-common PVE/JSONSchema.pm ``pve-configid``
CONFIGID = re.compile(r"\A[a-z][a-z0-9_-]+\Z", re.IGNORECASE)
FLAGS = re.compile(r"\A[+-][a-zA-Z0-9\-_.]+(;[+-][a-zA-Z0-9\-_.]+)*\Z")


def _available(state: ClusterState) -> None:
    if version_tuple(pve_version(state.scenario)) < (9, 1, 14):
        raise ApiError(501, "Method 'GET /cluster/qemu/custom-cpu-models' not implemented")


def _models(state: ClusterState) -> list[dict]:
    models: list[dict] = state.scenario.setdefault("custom_cpu_models", [])
    return models


def list_models(state: ClusterState, query: dict[str, str]) -> Any:
    """``config`` (GET): the models the user may see (Mapping.* on /mapping/cpu/NAME), sorted by
    name, each with ``cputype`` custom-NAME (from the section header), its properties and the
    file's ``digest``; without such a privilege the list is empty (``user => 'all'``)."""
    _available(state)
    if not privileges(state) & set(SEE):
        return []
    models = sorted(_models(state), key=lambda m: str(m["name"]))
    digest = hashlib.sha1(json.dumps(models, sort_keys=True).encode()).hexdigest()
    rows = []
    for model in models:
        row: dict[str, Any] = {"cputype": f"custom-{model['name']}", "digest": digest}
        row.update({k: model[k] for k in PROPS if k in model})
        rows.append(row)
    return rows


def create_model(state: ClusterState, form: dict[str, str]) -> Any:
    """``create`` (POST): ``Mapping.Modify`` on /mapping/cpu; ``cputype`` (custom- optional, a
    pve-configid of at most 40 characters) and ``reported-model`` (required from pve-manager
    9.1.18); dies when the name exists; writes the model (``reported-model`` kept)."""
    _available(state)
    if "Mapping.Modify" not in privileges(state):
        raise ApiError(403, "Permission check failed (/mapping/cpu, Mapping.Modify)")
    unknown = [k for k in form if k != "cputype" and k not in PROPS]
    if unknown:
        raise ApiError(
            400, "Parameter verification failed.", {k: "property is not defined in schema" for k in unknown}
        )
    given = str(form.get("cputype") or "")
    name = given[len("custom-") :] if given.startswith("custom-") else given
    if len(given) > 40 or not CONFIGID.match(name):  # maxLength 40, then pve_verify_configid
        raise ApiError(
            400, "Parameter verification failed.", {"cputype": f"invalid configuration ID '{name}'"}
        )
    if not form.get("reported-model") and version_tuple(pve_version(state.scenario)) >= (9, 1, 18):
        raise ApiError(
            400,
            "Parameter verification failed.",
            {"reported-model": "property is missing and it is not optional"},
        )
    if "flags" in form and not FLAGS.match(form["flags"]):
        raise ApiError(
            400, "Parameter verification failed.", {"flags": "value does not match the regex pattern"}
        )
    if any(str(m["name"]) == name for m in _models(state)):
        raise ApiError(500, f"custom CPU model '{name}' already exists")
    model: dict[str, Any] = {"name": name}
    model.update({k: form[k] for k in PROPS if k in form})
    _models(state).append(model)
    return None
