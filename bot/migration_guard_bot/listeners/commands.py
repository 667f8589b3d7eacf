"""The slash command (default ``/canmove``): ack at once, then answer via the response_url."""

from __future__ import annotations

import logging

from slack_bolt import Ack, App, Respond

from migration_guard_bot.listeners.deps import Deps

log = logging.getLogger(__name__)


def register(app: App, deps: Deps) -> None:
    @app.command(deps.command)
    def canmove(ack: Ack, command: dict, respond: Respond) -> None:
        ack()  # within Slack's 3 seconds, before asking the (maybe slow) service

        def reply_later() -> None:
            reply = deps.answer_text(command.get("text") or "", command.get("user_id") or "")
            respond(
                text=reply.text,
                blocks=reply.blocks,
                response_type="in_channel" if reply.public else "ephemeral",
                replace_original=False,
            )

        deps.later(reply_later, f"{deps.command} of {command.get('user_id', '?')}")
