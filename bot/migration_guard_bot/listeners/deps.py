"""What every listener needs (``Deps``): the service client, the slash command and the answering pool."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

from migration_guard_bot.answers import Answer, Service, answer
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
