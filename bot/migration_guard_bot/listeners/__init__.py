"""Listener groups of the Slack app, one module per way of asking (Bolt starter-template style).

``register(app, deps)`` wires every group; each group module has its own ``register``.

Every listener acknowledges at once and hands the (maybe slow) service call to ``Deps.later``:
a pool of its own, so a slow service never keeps Bolt's workers busy and every request is
acknowledged within Slack's 3 seconds however many questions arrive at once.
"""

from __future__ import annotations

from slack_bolt import App

from migration_guard_bot.listeners import actions, commands, home, mentions, messages
from migration_guard_bot.listeners.deps import Deps


def register(app: App, deps: Deps) -> None:
    commands.register(app, deps)
    mentions.register(app, deps)
    messages.register(app, deps)
    home.register(app, deps)
    actions.register(app, deps)
