"""Two Proxmox calls at the same time: the caller's thread makes the first, a small pool the
second (one round trip instead of two)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

#: threads for the second of two calls made at once (the caller's thread makes the first)
PAIR_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="pve-pair")


def both(first: Callable[[], T], second: Callable[[], Any]) -> tuple[T, Any]:
    """Run two Proxmox calls at the same time; the first one's error wins if both fail."""
    other = PAIR_POOL.submit(second)
    try:
        a = first()
    except BaseException:
        other.cancel()
        with contextlib.suppress(BaseException):  # its error is the lesser one
            other.result()
        raise
    return a, other.result()
