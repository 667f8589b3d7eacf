"""The direct-message listener (listeners/messages.py), driven through the real Bolt app with
signed requests: answers a person, ignores bots and edits."""

from __future__ import annotations

import time

import pytest

from tests.bot.signed_requests import event, post

pytestmark = pytest.mark.integration


def test_direct_message_answers_and_ignores_bots(slack, bot):
    dm = {
        "type": "message",
        "channel_type": "im",
        "user": "U0ASK",
        "text": "why was 101 blocked?",
        "ts": "1700000000.000200",
        "channel": "D0ASK",
        "event_ts": "1700000000.000200",
    }
    from_bot = dict(dm, bot_id="B0BOT", text="recent blocks", ts="1700000000.000300")
    post(bot, event(from_bot, "Ev2"), "application/json")
    post(bot, event(dm, "Ev3"), "application/json")
    (call,) = slack.wait_for("chat.postMessage", 1)
    time.sleep(0.3)
    assert len(slack.calls("chat.postMessage")) == 1
    assert call["params"]["channel"] == "D0ASK"
    assert call["params"]["text"].startswith("Latest decisions for VM 101:")


def test_edits_and_channel_messages_are_not_answered(slack, bot):
    dm = {
        "type": "message",
        "channel_type": "im",
        "user": "U0ASK",
        "text": "recent blocks",
        "ts": "1700000000.000400",
        "channel": "D0ASK",
        "event_ts": "1700000000.000400",
    }
    edited = dict(dm, subtype="message_changed")
    in_channel = dict(dm, channel_type="channel", channel="C0ASK", ts="1700000000.000500")
    assert post(bot, event(edited, "Ev4"), "application/json").status_code == 200
    assert post(bot, event(in_channel, "Ev5"), "application/json").status_code == 200
    time.sleep(0.5)
    assert slack.calls("chat.postMessage") == []
