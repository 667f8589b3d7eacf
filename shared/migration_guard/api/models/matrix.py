"""The matrix's answer (``GET /v1/matrix``) in its two forms: ``full`` (each row's cells by node
name) and ``compact`` (``?format=compact``: the distinct cells once, rows point at them by index)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from migration_guard.api.models import Answer, MatrixBody, MatrixCell, MatrixRow


class MatrixCompactRow(Answer):
    vmid: int
    name: str
    node: str
    status: str
    cpu: str
    targets: list[int | None] = Field(
        description="per node of `nodes`, in that order: the index of its cell in `cells` "
        "(null for the VM's own node)"
    )


class MatrixAnswer(MatrixBody):
    """Every VM against every other node. ``?format=compact`` (for big clusters): each distinct
    cell (verdict, code, exit) is listed once in ``cells`` and every row's ``targets`` holds one
    index into it per node of ``nodes``; the verdicts are the full form's, the body a fraction of
    its size."""

    format: Literal["full", "compact"] = Field(
        default="full", description="compact when asked for; the full form leaves it out"
    )
    cells: list[MatrixCell] | None = Field(
        default=None, description="compact form only: the distinct cells, by index"
    )
    vms: list[MatrixRow | MatrixCompactRow]  # type: ignore[assignment]
