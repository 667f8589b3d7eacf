"""The bot's settings, read once from the environment.

Tokens and the signing secret are kept out of ``repr`` so a settings object can be logged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from migration_guard.errors import ConfigError

DEFAULT_COMMAND = "/canmove"
DEFAULT_LISTEN = "127.0.0.1:3000"
DEFAULT_SERVICE_URL = "http://127.0.0.1:8080"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"


@dataclass(frozen=True, slots=True)
class BotSettings:
    bot_token: str = field(default="", repr=False)
    app_token: str = field(default="", repr=False)
    signing_secret: str = field(default="", repr=False)
    channel: str = ""
    command: str = DEFAULT_COMMAND
    slack_api_url: str = DEFAULT_SLACK_API_URL
    service_url: str = DEFAULT_SERVICE_URL
    service_token: str = field(default="", repr=False)
    redis_url: str = ""
    listen: str = DEFAULT_LISTEN
    #: threads answering questions (each waits for the service), so Bolt's own stay free
    answer_workers: int = 8
    #: post when a running VM has been unguarded this long (seconds; 0: never)
    unguarded_after_s: float = 1800.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BotSettings:
        env = os.environ if env is None else env

        def get(name: str, default: str = "") -> str:
            return (env.get(name) or default).strip()

        command = get("MIGRATION_GUARD_SLACK_COMMAND", DEFAULT_COMMAND)
        if not command.startswith("/"):
            command = "/" + command
        if not re.fullmatch(r"/[a-z0-9_\-]{1,31}", command):
            raise ConfigError(
                f"MIGRATION_GUARD_SLACK_COMMAND={command!r} is not a Slack slash command "
                "(lower-case letters, digits, - and _, e.g. /canmove)"
            )
        workers = get("MIGRATION_GUARD_BOT_ANSWER_WORKERS", "8")
        if not workers.isdigit() or not 1 <= int(workers) <= 256:
            raise ConfigError(
                f"MIGRATION_GUARD_BOT_ANSWER_WORKERS={workers!r} is not a number of threads from 1 to 256"
            )
        after = get("MIGRATION_GUARD_BOT_UNGUARDED_AFTER", "30")
        if not after.isdigit() or int(after) > 10080:
            raise ConfigError(
                f"MIGRATION_GUARD_BOT_UNGUARDED_AFTER={after!r} is not a number of minutes "
                "from 0 (off) to 10080"
            )
        api_url = get("MIGRATION_GUARD_SLACK_API_URL", DEFAULT_SLACK_API_URL)
        if not api_url.endswith("/"):
            api_url += "/"
        return cls(
            bot_token=get("SLACK_BOT_TOKEN"),
            app_token=get("SLACK_APP_TOKEN"),
            signing_secret=get("SLACK_SIGNING_SECRET"),
            channel=get("MIGRATION_GUARD_SLACK_CHANNEL"),
            command=command,
            slack_api_url=api_url,
            service_url=get("MIGRATION_GUARD_URL", DEFAULT_SERVICE_URL).rstrip("/"),
            service_token=get("MIGRATION_GUARD_TOKEN"),
            redis_url=get("MIGRATION_GUARD_REDIS_URL"),
            listen=get("MIGRATION_GUARD_BOT_LISTEN", DEFAULT_LISTEN),
            answer_workers=int(workers),
            unguarded_after_s=int(after) * 60.0,
        )

    def listen_address(self) -> tuple[str, int]:
        """``host:port`` of ``--http`` mode; ``[::1]:3000`` works for IPv6."""
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ConfigError(
                f"MIGRATION_GUARD_BOT_LISTEN={self.listen!r} is not host:port (e.g. 127.0.0.1:3000)"
            )
        return host.strip("[]"), int(port)

    def require_slack(self, *, http: bool) -> None:
        """Raise ConfigError naming the first missing setting for talking to Slack."""
        if not self.bot_token:
            raise ConfigError("SLACK_BOT_TOKEN is not set (the xoxb-... token of the Slack app)")
        if http and not self.signing_secret:
            raise ConfigError("SLACK_SIGNING_SECRET is not set; --http mode verifies every request with it")
        if not http and not self.app_token:
            raise ConfigError(
                "SLACK_APP_TOKEN is not set (the xapp-... token for Socket Mode); "
                "set it, or run with --http behind a public URL"
            )
