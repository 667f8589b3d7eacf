"""An optional folder of extra CPU dumps (``/proc/cpuinfo``-derived JSON like
shared/migration_guard/data/cpus/*.json)
that some tests add to the shipped fixtures when it is there: name it in
``MIGRATION_GUARD_TEST_EXTRA_CPUS``. Unset (a fresh clone), those tests run on the shipped fixtures
alone or are skipped; nothing outside the repository is read unless this variable names it."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "MIGRATION_GUARD_TEST_EXTRA_CPUS"


def extra_cpus_dir() -> Path | None:
    """The folder ``MIGRATION_GUARD_TEST_EXTRA_CPUS`` names, or None when unset or not a folder."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_dir() else None


SKIP_REASON = f"{ENV} does not name a folder of extra CPU dumps"
