"""What every listener needs (``Deps``): the service client, the slash command and the answering pool."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from migration_guard_bot import override_links
from migration_guard_bot.answers import Answer, Service, answer
from migration_guard_bot.ask.overrides import slack_person
from migration_guard_bot.parser import parse

log = logging.getLogger(__name__)


def answer_pool(workers: int = 8) -> Executor:
    """The pool the listeners answer on (MIGRATION_GUARD_BOT_ANSWER_WORKERS threads)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="answer")


@dataclass(frozen=True, slots=True)
class Deps:
    """What the listeners need: the service client, the slash command, the answering pool."""

    service: Service
    command: str = "/canmove"
    work: Executor = field(default_factory=answer_pool)
    #: the bot's Redis (the notifier's): links an override to the veto message of its VM and target
    store: Any = None
    #: the veto channel, and the Web API client that edits its messages
    channel: str = ""
    slack: Any = None

    def answer_text(self, text: str, user: str = "") -> Answer:
        """The answer to ``text`` asked by Slack user ``user`` (its ID; empty: unknown). An override
        request is shown on the veto message of its VM and target too."""
        who = slack_person(user) if user else ""
        reply = answer(parse(text or ""), self.service, self.command, user=who)
        if reply.override is not None and self.store is not None and self.slack is not None:
            try:
                override_links.link(self.store, self.slack, self.channel, reply.override)
            except Exception as exc:  # noqa: BLE001 - Redis or Slack down: the answer still shows it
                log.warning(
                    "could not show override %s on its veto message: %s", reply.override.get("id"), exc
                )
        return reply

    def later(self, job: Callable[[], None], what: str) -> None:
        """Run ``job`` on the answering pool; a failure is logged (one line), never lost silently."""

        def run() -> None:
            try:
                job()
            except Exception as exc:  # the Slack call failed: nothing more to tell the asker
                log.warning("could not deliver the answer to %s: %s", what, exc)

        self.work.submit(run)
