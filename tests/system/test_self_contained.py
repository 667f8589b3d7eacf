"""A fresh clone in any folder runs its tests: nothing in the repository reads or names a folder
beside it (the sibling folder of a developer's machine is not in a user's clone)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: a path that climbs out of the repository into a sibling folder named "shared"
SIBLING = ".." + "/shared"
#: spellings of that path in Python (built so this file does not match itself)
PATTERNS = (SIBLING, '".." / ' + '"shared"', '"..", ' + '"shared"', "parent / " + '"shared"')
TEXT = {".py", ".md", ".toml", ".yml", ".yaml", ".sh", ".cfg", ""}


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        pytest.skip("not a git checkout")
    return [REPO / name for name in out.decode().split("\0") if name]


def test_no_file_names_a_folder_outside_the_repository() -> None:
    named = []
    for path in tracked_files():
        if not path.is_file() or path.suffix not in TEXT:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if any(pattern in text for pattern in PATTERNS):
            named.append(str(path.relative_to(REPO)))
    assert not named, f"these files name a folder outside the repository: {named}"
