"""The demo's extra dependency (trustme) is an extra: without it, one line says how to get it."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from migration_guard.demo.pve_server import start_server
from migration_guard.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_trustme_is_an_extra_that_dev_pulls_in():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("trustme")]
    assert [d for d in project["optional-dependencies"]["demo"] if d.startswith("trustme")]
    assert "pve-migration-guard[demo]" in project["optional-dependencies"]["dev"]


def test_without_trustme_the_demo_server_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "trustme", None)  # import trustme -> ImportError
    with pytest.raises(ConfigError) as err:
        start_server("demo")
    assert "pip install 'pve-migration-guard[demo]'" in str(err.value)
