"""@mentions in channels: answer in the thread of the question (events are acked by Bolt first)."""

from __future__ import annotations

from slack_bolt import App, Say

from migration_guard_bot.listeners.deps import Deps


def register(app: App, deps: Deps) -> None:
    @app.event("app_mention")
    def mentioned(event: dict, say: Say) -> None:
        def reply_later() -> None:
            reply = deps.answer_text(event.get("text") or "", event.get("user") or "")
            say(
                text=reply.text,
                blocks=reply.blocks,
                thread_ts=event.get("thread_ts") or event.get("ts"),
                unfurl_links=False,
                unfurl_media=False,
            )

        deps.later(reply_later, f"a mention by {event.get('user', '?')}")
