"""The latest answer of a costly report, for ``/metrics``: a scrape must show a recent value but
must never hang on Proxmox. ``fresh`` renews the answer in the background when it is older than
``max_age_s`` and waits ``wait_s`` at most for it; until then the last one stands (or none yet)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from migration_guard.errors import GuardError


class Latest:
    def __init__(self, compute: Callable[[], Awaitable[dict]], clock: Callable[[], float]) -> None:
        self._compute = compute
        self._clock = clock
        self.last: dict | None = None
        self.last_at = 0.0
        self._task: asyncio.Task | None = None

    async def run(self) -> dict:
        """Compute it now (the API's own request), and keep it."""
        body = await self._compute()
        self.last, self.last_at = body, self._clock()
        return body

    async def fresh(self, max_age_s: float, wait_s: float) -> dict | None:
        if self.last is not None and self._clock() - self.last_at < max_age_s:
            return self.last
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self.run())
            self._task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: no warning
        with contextlib.suppress(TimeoutError, GuardError):  # the last answer, or none yet
            await asyncio.wait_for(asyncio.shield(self._task), wait_s)
        return self.last
