"""The node kit's standard-library modules (hookscript/guard_*.py) as tests import them: top-level
modules from the hookscript folder, as the launcher imports them on a node."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

HOOKSCRIPT_DIR = Path(__file__).resolve().parents[2] / "hookscript"
LAUNCHER = HOOKSCRIPT_DIR / "migration-guard-hook"


def guard_modules(*names: str) -> list[ModuleType]:
    if str(HOOKSCRIPT_DIR) not in sys.path:
        sys.path.append(str(HOOKSCRIPT_DIR))
    return [importlib.import_module(name) for name in names]
