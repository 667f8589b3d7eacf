"""Listener groups of the Slack app, one module per way of asking (Bolt starter-template style).

``register(app, deps)`` wires every group; each group module has its own ``register``.
"""

from __future__ import annotations

from dataclasses import dataclass

from slack_bolt import App

from ..answers import Answer, Service, answer
from ..parser import parse


@dataclass(frozen=True, slots=True)
class Deps:
    """What the listeners need: the service client and the configured slash command."""

    service: Service
    command: str = "/canmove"

    def answer_text(self, text: str) -> Answer:
        return answer(parse(text or ""), self.service, self.command)


def register(app: App, deps: Deps) -> None:
    from . import commands, home, mentions, messages

    commands.register(app, deps)
    mentions.register(app, deps)
    messages.register(app, deps)
    home.register(app, deps)
