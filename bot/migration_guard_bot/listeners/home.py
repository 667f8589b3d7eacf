"""The App Home tab: published each time someone opens it."""

from __future__ import annotations

from slack_bolt import App
from slack_sdk import WebClient

from migration_guard_bot.home import home_view
from migration_guard_bot.listeners.deps import Deps


def register(app: App, deps: Deps) -> None:
    @app.event("app_home_opened")
    def home_opened(event: dict, client: WebClient) -> None:
        if event.get("tab", "home") != "home" or not event.get("user"):
            return

        def publish_later() -> None:
            client.views_publish(user_id=event["user"], view=home_view(deps.service, deps.command))

        deps.later(publish_later, f"the App Home of {event['user']}")
