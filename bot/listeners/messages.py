"""Direct messages to the bot. Messages from bots (itself included) and edits are ignored."""

from __future__ import annotations

from slack_bolt import App, Say

from . import Deps


def register(app: App, deps: Deps) -> None:
    @app.event("message")
    def direct_message(event: dict, say: Say) -> None:
        if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id"):
            return
        reply = deps.answer_text(event.get("text") or "")
        say(text=reply.text, blocks=reply.blocks, unfurl_links=False, unfurl_media=False)
