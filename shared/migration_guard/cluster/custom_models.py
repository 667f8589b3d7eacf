"""The cluster's custom CPU models through ``/cluster/qemu/custom-cpu-models`` (pve-manager
``PVE/API2/Cluster/Qemu/CustomCPUModels.pm``, since pve-manager 9.1.14; older releases answer 501).

* ``GET``: every model the token may see, one object per model with the ``cpu-models.conf``
  properties (``cputype`` = ``custom-NAME``, ``reported-model``, ``flags``, ``phys-bits``, ...)
  and ``digest``. Proxmox lists only the models on whose ``/mapping/cpu/NAME`` the user has
  ``Mapping.Audit``, ``Mapping.Use`` or ``Mapping.Modify``: a token without them gets an empty list,
  not a 403.
* ``POST``: creates one (``cputype`` with or without ``custom-``; ``reported-model`` required
  from pve-manager 9.1.18); privilege ``Mapping.Modify`` on ``/mapping/cpu``; fails when the name
  exists.

The answer is turned into the ``cpu-models.conf`` text the engine parses
(:func:`migration_guard.engine.cpu_spec.parse_custom_models`), so the API and a copy of the file
are read by the same parser.
"""

from __future__ import annotations

from typing import Any

from migration_guard.engine.baseline import section_text
from migration_guard.engine.cpu_spec import CustomModel
from migration_guard.errors import (
    ProxmoxBadAnswer,
    ProxmoxNotFound,
    ProxmoxNotImplemented,
    ProxmoxPermissionError,
)

#: the properties of a model in cpu-models.conf (qemu-server CPUConfig.pm ``$cpu_fmt``)
_PROPS = ("flags", "guest-phys-bits", "hidden", "hv-vendor-id", "level", "phys-bits", "reported-model")
PATH = "/cluster/qemu/custom-cpu-models"


def _section(row: dict) -> str:
    cputype = str(row.get("cputype") or "")
    name = cputype[len("custom-") :] if cputype.startswith("custom-") else cputype
    lines = [f"cpu-model: {name}"]
    for key in _PROPS:
        value = row.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            value = int(value)
        lines.append(f"\t{key} {value}")
    return "\n".join(lines) + "\n\n"


def read(reader: Any) -> str | None:
    """The cluster's custom models as ``cpu-models.conf`` text ("" = none visible); None where
    the cluster has no such endpoint (501, or 404 before the path existed)."""
    try:
        rows = reader._call(
            "custom-cpu-models",
            f"the custom CPU models ({PATH})",
            lambda: reader._api.cluster.qemu("custom-cpu-models").get(),
        )
    except (ProxmoxNotImplemented, ProxmoxNotFound):
        return None
    for row in rows:
        if not str(row.get("cputype") or "").strip():
            raise ProxmoxBadAnswer(f"Proxmox answered {PATH} with a model that has no cputype")
    return "".join(_section(row) for row in rows)


def create(reader: Any, model: CustomModel) -> None:
    """Create ``model`` through ``POST /cluster/qemu/custom-cpu-models``. Raises ProxmoxError
    (ProxmoxPermissionError without Mapping.Modify on /mapping/cpu; a 500 naming an existing
    model)."""
    # the bare name: ``cputype`` may be 40 characters long, the optional custom- prefix included
    params: dict[str, Any] = {"cputype": model.name, "reported-model": model.reported_model}
    text = section_text(model)
    for line in text.splitlines()[1:]:
        key, _, value = line.strip().partition(" ")
        if key and key != "reported-model":
            params[key] = value
    try:
        reader._call(
            "custom-cpu-models-create",
            f"custom CPU models (POST {PATH})",
            lambda: reader._api.cluster.qemu("custom-cpu-models").post(**params),
        )
    except ProxmoxPermissionError:
        raise ProxmoxPermissionError(
            f"the API token {reader.token_id} may not create custom CPU models (403: Proxmox needs "
            "Mapping.Modify on /mapping/cpu): give its role that privilege, or add the section of "
            f"{model.name} to /etc/pve/virtual-guest/cpu-models.conf by hand"
        ) from None
