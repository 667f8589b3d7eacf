"""The App Home listener (listeners/home.py), driven through the real Bolt app with signed requests:
publishes the home tab when it is opened."""

from __future__ import annotations

import json
import time

import pytest

from tests.bot.signed_requests import event, post

pytestmark = pytest.mark.integration


def test_app_home_opened_publishes_the_home_tab(slack, bot):
    inner = {
        "type": "app_home_opened",
        "user": "U0ASK",
        "channel": "D0ASK",
        "tab": "home",
        "event_ts": "1700000000.000300",
    }
    assert post(bot, event(inner), "application/json").status_code == 200
    (call,) = slack.wait_for("views.publish", 1)
    view = call["params"]["view"]
    assert call["params"]["user_id"] == "U0ASK" and view["type"] == "home"
    flat = json.dumps(view["blocks"], ensure_ascii=False)
    assert "`node3` – Intel(R) Xeon(R) Gold 6130, GenuineIntel – best type `Haswell`" in flat
    assert "*Recommended CPU type*\\n`x86-64-v3`" in flat
    assert "VM 101 `web01` `node1` → `node3`" in flat


def test_other_tabs_of_the_app_publish_nothing(slack, bot):
    inner = {
        "type": "app_home_opened",
        "user": "U0ASK",
        "channel": "D0ASK",
        "tab": "messages",
        "event_ts": "1700000000.000400",
    }
    assert post(bot, event(inner), "application/json").status_code == 200
    time.sleep(0.5)
    assert slack.calls("views.publish") == []
