"""A clock the test sets: facts age, lifetimes pass and node-wide answers expire without waiting.
Passed wherever the code takes ``clock=`` (the service, the facts cache, VmStatusReader)."""

from __future__ import annotations

import time


class Clock:
    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now
