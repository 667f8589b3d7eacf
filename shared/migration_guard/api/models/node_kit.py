"""The node kit's manifest (``GET /v1/node-kit`` with ``Accept: application/json``); the kit itself
is a shell script (``text/x-shellscript``)."""

from __future__ import annotations

from pydantic import BaseModel


class KitFileInfo(BaseModel):
    name: str
    sha256: str
    size: int


class NodeKitManifest(BaseModel):
    #: the service's version, which the kit's files are
    version: str
    files: list[KitFileInfo]
