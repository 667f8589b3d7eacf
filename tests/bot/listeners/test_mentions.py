"""The @mention listener (listeners/mentions.py), driven through the real Bolt app with signed
requests: answers in the thread of the question."""

from __future__ import annotations

import json
import time

import pytest

from tests.bot.signed_requests import event, post

pytestmark = pytest.mark.integration


def test_app_mention_answers_in_thread(slack, service, bot):
    service.delay = 3.5
    inner = {
        "type": "app_mention",
        "user": "U0ASK",
        "text": "<@U0BOT> Can VM 101 go to node2?",
        "ts": "1700000000.000100",
        "channel": "C0ASK",
        "event_ts": "1700000000.000100",
    }
    started = time.monotonic()
    assert post(bot, event(inner), "application/json").status_code == 200
    assert time.monotonic() - started < 3.0  # acked before the slow service answered
    (call,) = slack.wait_for("chat.postMessage", 1)
    p = call["params"]
    assert p["channel"] == "C0ASK" and p["thread_ts"] == "1700000000.000100"
    assert p["text"].startswith("YES: VM 101 (web01) can move to node2")
    assert ":white_check_mark: Yes:*" in json.dumps(p["blocks"])


def test_a_mention_inside_a_thread_is_answered_in_that_thread(slack, bot):
    inner = {
        "type": "app_mention",
        "user": "U0ASK",
        "text": "<@U0BOT> help",
        "ts": "1700000000.000900",
        "thread_ts": "1700000000.000100",
        "channel": "C0ASK",
        "event_ts": "1700000000.000900",
    }
    assert post(bot, event(inner), "application/json").status_code == 200
    (call,) = slack.wait_for("chat.postMessage", 1)
    assert call["params"]["thread_ts"] == "1700000000.000100"
    assert "/canmove 101 node3" in call["params"]["text"]
