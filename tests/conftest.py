"""Test-session set-up shared by every test module.

Redis: the tests never touch a Redis they did not start. Before any test module is imported, a
private ``redis-server`` is started on a free loopback port (nothing kept on disk) and its URL is put
in ``MIGRATION_GUARD_TEST_REDIS``; ``tests.support.redis_server.redis_url(db)`` hands out databases of it.
To use a Redis of your own instead (one you are happy to have emptied), set
``MIGRATION_GUARD_TEST_REDIS=redis://host:port`` before running pytest.
"""

from __future__ import annotations

import os

import pytest

from tests.support import redis_server as redis_support

_private = None


def pytest_configure(config) -> None:
    global _private
    if os.environ.get(redis_support.ENV):
        return
    _private = redis_support.start_private_redis()
    if _private is not None:
        os.environ[redis_support.ENV] = f"redis://127.0.0.1:{_private.port}"


def pytest_unconfigure(config) -> None:
    if _private is not None:
        _private.stop()


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path_factory, monkeypatch) -> None:
    """Each test's services keep their spool in a folder of their own, never /var/lib."""
    monkeypatch.setenv("MIGRATION_GUARD_STATE_DIR", str(tmp_path_factory.mktemp("state")))


def pytest_collection_modifyitems(config, items) -> None:
    """Proxmox answers a wrong token only after 3 s (pve-http-server). The in-process test servers
    answer it at once, except in tests/demo/test_pve_conformance.py, which checks Proxmox's own delays."""
    from migration_guard.demo import pve_scenario as pve_testserver

    pve_testserver.DEFAULT_AUTH_FAILURE_DELAY_S = 0.0
