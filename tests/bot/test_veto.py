"""A stream entry as a veto, and the Slack message that shows it (veto.py)."""

from __future__ import annotations

import json

import pytest

from migration_guard_bot.veto import Veto, event_time, parse_entry, repeat_line, repeat_of, veto_message
from tests.bot.support import veto_event


def test_an_entry_becomes_a_veto_keyed_by_vm_and_target():
    ev = veto_event(vmid=205, target="node2")
    veto = parse_entry("1700000000000-0", {"event": json.dumps(ev)})
    assert veto is not None and veto.event_id == ev["id"] and veto.body == ev
    assert veto.thread_key == "lab:205:lab:node2"


def test_an_event_without_an_id_is_named_by_its_entry():
    ev = veto_event()
    del ev["id"]
    veto = parse_entry("1700000000000-7", {"event": json.dumps(ev)})
    assert veto is not None and veto.event_id == "1700000000000-7"


def test_an_entry_that_is_no_veto_is_none():
    assert parse_entry("1-0", {"event": "{not json"}) is None
    assert parse_entry("1-0", None) is None


def test_the_first_veto_of_a_run_shows_no_count():
    ev = veto_event(repeat={"count": 1, "since": "2026-11-29T10:02:00Z"})
    message = veto_message(Veto("1-0", ev["id"], ev))
    assert "blocked" not in message.text and "blocked" not in json.dumps(message.blocks)


def test_a_repeat_shows_the_running_count_and_what_ha_does():
    ev = veto_event(repeat={"count": 14, "since": "2026-11-29T10:02:00Z"})
    message = veto_message(Veto("1-0", ev["id"], ev))
    line = (
        "blocked 14 times since 10:02 UTC; "
        "HA retries until the node leaves maintenance or the CPU type changes"
    )
    assert message.text.endswith(f" {line}.")
    assert message.blocks[1]["text"]["text"] == f"*{line}*"


@pytest.mark.parametrize("repeat", [None, "14", {"count": True}, {"count": 0}, {"count": "3"}])
def test_a_count_that_is_no_positive_number_is_ignored(repeat):
    assert repeat_of({"repeat": repeat}) == (None, None)


def test_a_count_without_a_readable_start_names_no_time():
    assert repeat_of({"repeat": {"count": 3, "since": 5}}) == (3, None)
    assert repeat_line(3, "yesterday").startswith("blocked 3 times; HA retries")


def test_event_time_reads_iso_8601_as_utc_when_it_names_no_zone():
    assert event_time({"time": "2026-11-29T00:30:00"}) == event_time({"time": "2026-11-29T00:30:00Z"})
    assert event_time({"time": "2026-11-29T01:30:00+01:00"}) == event_time({"time": "2026-11-29T00:30:00Z"})
    assert event_time({"time": "soon"}) is None and event_time({}) is None
