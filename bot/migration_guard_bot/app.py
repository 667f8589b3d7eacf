"""The Slack app: ``build_app(settings, service)`` -> slack_bolt.App with every listener."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from migration_guard.errors import ConfigError, ServiceUnavailable
from migration_guard_bot import listeners
from migration_guard_bot.answers import Service
from migration_guard_bot.listeners.deps import Deps, answer_pool
from migration_guard_bot.settings import BotSettings

log = logging.getLogger(__name__)


def slack_client(settings: BotSettings) -> WebClient:
    """The Web API client; MIGRATION_GUARD_SLACK_API_URL points it at a test or private Slack."""
    return WebClient(
        token=settings.bot_token,
        base_url=settings.slack_api_url,
        timeout=15,
        retry_handlers=[ConnectionErrorRetryHandler(), RateLimitErrorRetryHandler(max_retry_count=2)],
    )


def build_app(
    settings: BotSettings,
    service: Service,
    *,
    client: WebClient | None = None,
    verify_token: bool = True,
    store: Any = None,
) -> App:
    """``store``: the bot's Redis (the notifier's), where an override request is linked to the veto
    message of its VM and target; None: overrides are shown where they are asked only."""
    try:
        app = App(
            client=client or slack_client(settings),
            signing_secret=settings.signing_secret or "unused-in-socket-mode",
            process_before_response=False,  # ack first, answer from a worker thread
            token_verification_enabled=verify_token,
            raise_error_for_unhandled_request=False,
            logger=logging.getLogger("bot.bolt"),
        )
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else "unknown"
        raise ConfigError(f"Slack refused SLACK_BOT_TOKEN ({error})") from exc
    except (SlackClientError, OSError) as exc:
        raise ServiceUnavailable(
            f"cannot reach the Slack API at {settings.slack_api_url} ({type(exc).__name__})"
        ) from exc
    deps = Deps(
        service=service,
        command=settings.command,
        work=answer_pool(settings.answer_workers),
        store=store,
        channel=settings.channel,
        slack=app.client,
    )
    listeners.register(app, deps)
    return app
