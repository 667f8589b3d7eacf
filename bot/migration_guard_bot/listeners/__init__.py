"""Listener groups of the Slack app, one module per way of asking (Bolt starter-template style).

``register(app, deps)`` wires every group; each group module has its own ``register``.

Every listener acknowledges at once and hands the (maybe slow) service call to ``Deps.later``:
a pool of its own, so a slow service never keeps Bolt's workers busy and every request is
acknowledged within Slack's 3 seconds however many questions arrive at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

from slack_bolt import App

from migration_guard_bot.answers import Answer, Service, answer
from migration_guard_bot.parser import parse

log = logging.getLogger(__name__)

ANSWER_WORKERS = 8


def _pool() -> Executor:
    return ThreadPoolExecutor(max_workers=ANSWER_WORKERS, thread_name_prefix="answer")


@dataclass(frozen=True, slots=True)
class Deps:
    """What the listeners need: the service client, the slash command, the answering pool."""

    service: Service
    command: str = "/canmove"
    work: Executor = field(default_factory=_pool)

    def answer_text(self, text: str) -> Answer:
        return answer(parse(text or ""), self.service, self.command)

    def later(self, job: Callable[[], None], what: str) -> None:
        """Run ``job`` on the answering pool; a failure is logged (one line), never lost silently."""

        def run() -> None:
            try:
                job()
            except Exception as exc:  # the Slack call failed: nothing more to tell the asker
                log.warning("could not deliver the answer to %s: %s", what, exc)

        self.work.submit(run)


def register(app: App, deps: Deps) -> None:
    from migration_guard_bot.listeners import commands, home, mentions, messages

    commands.register(app, deps)
    mentions.register(app, deps)
    messages.register(app, deps)
    home.register(app, deps)
