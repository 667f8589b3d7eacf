"""The bot's tunables are settings: the answering pool's size."""

from __future__ import annotations

import pytest

from migration_guard.errors import ConfigError
from migration_guard_bot.app import build_app
from migration_guard_bot.settings import BotSettings


def test_answer_workers_default_and_setting():
    assert BotSettings.from_env({}).answer_workers == 8
    assert BotSettings.from_env({"MIGRATION_GUARD_BOT_ANSWER_WORKERS": "3"}).answer_workers == 3


@pytest.mark.parametrize("value", ["0", "many", "1000"])
def test_a_wrong_answer_workers_names_the_setting(value):
    with pytest.raises(ConfigError, match="MIGRATION_GUARD_BOT_ANSWER_WORKERS"):
        BotSettings.from_env({"MIGRATION_GUARD_BOT_ANSWER_WORKERS": value})


def test_build_app_answers_on_a_pool_of_that_size(monkeypatch):
    seen = {}
    from migration_guard_bot import app as app_module

    def register(app, deps):
        seen["workers"] = deps.work._max_workers

    monkeypatch.setattr(app_module.listeners, "register", register)
    settings = BotSettings.from_env(
        {"SLACK_BOT_TOKEN": "xoxb-test", "MIGRATION_GUARD_BOT_ANSWER_WORKERS": "3"}
    )
    build_app(settings, service=None, verify_token=False)
    assert seen["workers"] == 3


def test_ha_poll_and_digest_settings():
    s = BotSettings.from_env({})
    assert (s.ha_poll_s, s.digest_window_s, s.digest_min_vms) == (60, 120, 3)
    s = BotSettings.from_env(
        {
            "MIGRATION_GUARD_BOT_HA_POLL_S": "0",
            "MIGRATION_GUARD_BOT_DIGEST_WINDOW_S": "300",
            "MIGRATION_GUARD_BOT_DIGEST_MIN_VMS": "5",
        }
    )
    assert (s.ha_poll_s, s.digest_window_s, s.digest_min_vms) == (0, 300, 5)
    for name, bad in (
        ("MIGRATION_GUARD_BOT_HA_POLL_S", "-1"),
        ("MIGRATION_GUARD_BOT_DIGEST_WINDOW_S", "5"),
        ("MIGRATION_GUARD_BOT_DIGEST_MIN_VMS", "1"),
        ("MIGRATION_GUARD_BOT_DIGEST_WINDOW_S", "2m"),
    ):
        with pytest.raises(ConfigError, match=name):
            BotSettings.from_env({name: bad})
