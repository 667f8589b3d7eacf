"""Counts of the cluster reader's Proxmox calls and errors."""

from __future__ import annotations

import threading
from collections import Counter


class CallStats:
    """Counts of Proxmox calls and errors, by kind (read by /metrics and the benchmarks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def record(self, kind: str, error: str | None = None) -> None:
        with self._lock:
            self.calls[kind] += 1
            if error is not None:
                self.errors[error] += 1

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.calls.values())
