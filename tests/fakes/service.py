"""The service over an in-memory cluster reader and fakeredis: the fake most service and API tests
share (the scenario of tests/fixtures/service/scenario.json, one bearer token)."""

from __future__ import annotations

import json
from pathlib import Path

import fakeredis

from migration_guard.demo.memory_reader import MemoryReader
from migration_guard.service.guard import GuardService
from migration_guard.service.settings import load_settings
from migration_guard.store.redis_store import Store

SCENARIO = json.loads((Path(__file__).parents[1] / "fixtures" / "service" / "scenario.json").read_text())
TOKEN = "test-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeReader(MemoryReader):
    """The in-memory reader over this folder's test scenario."""

    def __init__(self, scenario: dict = SCENARIO, name: str = "lab") -> None:
        super().__init__(scenario, name)


def make_service(reader=None, redis=None, **settings):
    s = load_settings(None, api_tokens=TOKEN, pve_timeout=2, **settings)
    store = Store(redis or fakeredis.FakeAsyncRedis(decode_responses=True), "embedded", retry_s=0.0)
    return GuardService(s, reader or FakeReader(), store)
