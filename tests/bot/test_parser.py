"""The plain-words parser: a table of phrasings (accepted and refused) and a property test."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migration_guard_bot.parser import INTENTS, MAX_TEXT, Check, Decisions, Help, Recommend, Targets, parse

ACCEPTED = [
    ("can vm 101 move to node3?", Check(101, "node3")),
    ("can 101 go to node3", Check(101, "node3")),
    ("101 node3", Check(101, "node3")),
    ("CAN VM 101 MOVE TO NODE3?", Check(101, "NODE3")),
    ("Can VM#101 migrate to node3!!", Check(101, "node3")),
    ("vm101 node3", Check(101, "node3")),
    ("#101 -> node3", Check(101, "node3")),
    ("is it safe to move vm 101 onto node-3.", Check(101, "node-3")),
    ("could vm 101 live migrate to pve3.lab?", Check(101, "pve3.lab")),
    ("<@U0BOT> can vm 101 move to node3?", Check(101, "node3")),
    ("can vm 101 move to clusterB/node5?", Check(101, "node5", "clusterB")),
    ("101 clusterB/node5", Check(101, "node5", "clusterB")),
    ("  can   vm   101   go   to   node 3x  ", Check(101, "3x")),
    ("where can vm 101 go?", Targets(101)),
    ("101", Targets(101)),
    ("vm 101", Targets(101)),
    ("can vm 101 move?", Targets(101)),
    ("where can VM #4242 run", Targets(4242)),
    ("which cpu type should we use?", Recommend()),
    ("recommend for node1 node2", Recommend(("node1", "node2"))),
    ("recommend node1, node2 and node3", Recommend(("node1", "node2", "node3"))),
    ("what CPU type is best for the cluster", Recommend()),
    ("recommendation", Recommend()),
    ("why was 101 blocked?", Decisions(101)),
    ("recent blocks", Decisions()),
    ("show the latest vetoes", Decisions()),
    ("why was vm 101 vetoed", Decisions(101)),
    ("decisions for 101", Decisions(101)),
    ("help", Help()),
    ("HELP!", Help()),
    ("", Help()),
    ("?", Help()),
    ("hello", Help()),
]

REFUSED = [
    ("delete vm 101", 'I did not understand "delete"'),
    ("shutdown node3", 'I did not understand "shutdown"'),
    ("can vm 101 please explode", 'I did not understand "explode"'),
    ("can vm 101 move to node3; rm -rf /", "I did not understand"),
    ("can vm 101 move to node3 node4", "One target node at a time"),
    ("can vm 101 and 102 go to node3", "One VM at a time"),
    ("can vm 42 go to node3", "42 is not a VM ID"),
    ("can vm 99999999999 go to node3", "is not a VM ID"),
    ("can vm 00101 go to node3", "00101 is not a VM ID"),
    ("can vm move to node3", "Which VM?"),
    ("can vm 101 move to a/b/c", 'I did not understand "a/b/c"'),
    ("can vm 101 go to 102", "One VM at a time"),
    ("recommend for 101", 'I did not understand "101"'),
    ("why was web-01/x blocked", 'I did not understand "web-01/x"'),
    ("can vm 101 move to ｎｏｄｅ３", 'I did not understand "ｎｏｄｅ３"'),
    ("x" * (MAX_TEXT + 1), f"That message is {MAX_TEXT + 1} characters long"),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED, ids=[t[:40] or "empty" for t, _ in ACCEPTED])
def test_accepted(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(("text", "problem"), REFUSED, ids=[t[:40] for t, _ in REFUSED])
def test_refused_with_a_reason(text, problem):
    got = parse(text)
    assert isinstance(got, Help)
    assert problem in got.problem


def test_table_is_big_enough():
    assert len(ACCEPTED) + len(REFUSED) >= 30


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_never_crashes_on_any_string(text):
    got = parse(text)
    assert isinstance(got, INTENTS)
    if isinstance(got, (Check, Targets)) and isinstance(got.vm, int):
        assert 100 <= got.vm <= 999_999_999


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "can",
                "vm",
                "101",
                "to",
                "node3",
                "/",
                "#",
                "?",
                "recommend",
                "blocked",
                "where",
                "go",
                "a/b",
                "help",
                "\u0000",
                "<@U1>",
                "for",
                "-",
                "and",
            ]
        )
    ).map(" ".join)
)
def test_never_crashes_on_word_soup(text):
    assert parse(text) is not None
