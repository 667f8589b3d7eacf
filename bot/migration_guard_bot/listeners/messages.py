"""Direct messages to the bot. Messages from bots (itself included) and edits are ignored."""

from __future__ import annotations

from slack_bolt import App, Say

from migration_guard_bot.listeners.deps import Deps


def register(app: App, deps: Deps) -> None:
    @app.event("message")
    def direct_message(event: dict, say: Say) -> None:
        if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id"):
            return

        def reply_later() -> None:
            reply = deps.answer_text(event.get("text") or "", event.get("user") or "")
            say(text=reply.text, blocks=reply.blocks, unfurl_links=False, unfurl_media=False)

        deps.later(reply_later, f"a direct message from {event.get('user', '?')}")
