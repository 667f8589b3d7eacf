"""The command line's settings: the operator's side of the API and of the node tools, read once
from the environment (``MIGRATION_GUARD_*``) where a command's options do not say otherwise."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CliSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MIGRATION_GUARD_", extra="ignore")

    #: the compatibility service the client commands ask
    url: str = "http://127.0.0.1:8080"
    #: its bearer token
    token: SecretStr = SecretStr("")
    #: this node's name for remote-migrate (default: the host name)
    node: str = ""
    #: where remote-migrate keeps the re-attach commands of moves still to finish
    pending_reattach: str = ""
    #: the qm program remote-migrate runs
    qm: str = "qm"


def cli_settings() -> CliSettings:
    return CliSettings()
