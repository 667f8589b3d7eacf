"""The slash command listener (listeners/commands.py), driven through the real Bolt app with signed
requests: acked at once, answered via the response_url."""

from __future__ import annotations

import json
import time

import pytest

from tests.bot.signed_requests import FORM, Bot, answers, post, slash
from tests.bot.support import TOKEN

pytestmark = pytest.mark.integration


def test_slash_command_acks_fast_then_answers_via_response_url(slack, service, bot):
    service.delay = 5.0
    started = time.monotonic()
    r = post(bot, slash(slack, "101 node3"), FORM)
    assert r.status_code == 200
    assert time.monotonic() - started < 3.0
    assert slack.calls("response_url") == []
    (reply,) = answers(slack)
    assert time.monotonic() - started >= 5.0
    p = reply["params"]
    assert p["text"].startswith("NO: VM 101 (web01) cannot move to node3")
    assert "node3 lacks avx512f" in p["text"] and "Suggestion: use x86-64-v3" in p["text"]
    assert p["response_type"] == "in_channel"
    flat = json.dumps(p["blocks"], ensure_ascii=False)
    assert ":no_entry: No:* VM 101 `web01` cannot move to `node3`" in flat
    path, query, headers = service.requests[-1]
    assert path == "/v1/vms/101/check" and query == {"target": "node3"}
    assert headers["Authorization"] == f"Bearer {TOKEN}"


def test_burst_of_slash_commands_all_acked_fast_while_the_service_is_slow(slack, service, bot):
    """More questions than Bolt has workers (10): each still acked in time, each answered."""
    service.delay = 3.2
    for i in range(11):
        body = slash(slack, "101 node3", rid=f"burst{i}")
        started = time.monotonic()
        assert post(bot, body, FORM).status_code == 200
        assert time.monotonic() - started < 3.0, f"request {i} was not acked in time"
    got = slack.wait_for("response_url", 11, timeout=20)
    assert sorted(c["params"]["_path_id"] for c in got) == sorted(f"burst{i}" for i in range(11))
    assert all(c["params"]["text"].startswith("NO: VM 101 (web01)") for c in got)


def test_slash_command_without_target_lists_every_node(slack, bot):
    post(bot, slash(slack, "VM #101"), FORM)
    p = answers(slack)[0]["params"]
    assert "can move to 1 of 2 other nodes" in p["text"]
    assert "node2: yes" in p["text"] and "node3: no" in p["text"]


def test_cross_cluster_target_passes_target_cluster(slack, service, bot):
    post(bot, slash(slack, "can vm 101 move to clusterB/node2?"), FORM)
    p = answers(slack)[0]["params"]
    assert service.requests[-1][1] == {"target": "node2", "target_cluster": "clusterB"}
    assert "clusterB/node2" in p["text"]


def test_unknown_node_names_known_nodes_and_closest(slack, bot):
    post(bot, slash(slack, "101 nod3"), FORM)
    p = answers(slack)[0]["params"]
    assert "There is no node nod3. Did you mean node3? Known nodes: node1, node2, node3." in p["text"]


def test_service_down_is_one_line(slack):
    b = Bot(slack, "http://127.0.0.1:9")  # nothing listens there
    try:
        post(b, slash(slack, "101 node3"), FORM)
        p = answers(slack)[0]["params"]
        assert p["text"].startswith("Cannot answer right now: the migration-guard service at")
        assert "\n" not in p["text"] and len(p["blocks"]) == 1
        assert p["response_type"] == "ephemeral"  # only the asker sees the error
    finally:
        b.stop()


def test_vm_name_injection_is_neutralised(slack, bot):
    post(bot, slash(slack, "102 node2"), FORM)
    p = answers(slack)[0]["params"]
    raw = p["text"] + json.dumps(p["blocks"])
    assert "<!channel>" not in raw and "&lt;!channel&gt;" in p["text"]
    post(bot, slash(slack, "103 node2", rid="r2"), FORM)
    p = answers(slack, "r2", 2)[0]["params"]
    flat = json.dumps(p["blocks"], ensure_ascii=False)
    assert "<https://evil|x>" not in flat
    assert "`*bold* _it_ &lt;https://evil|x&gt;`" in flat  # inside code: no formatting, no link


def test_oversized_text_gets_a_clear_refusal(slack, bot):
    post(bot, slash(slack, "101 " + "x" * 3990), FORM)
    p = answers(slack)[0]["params"]
    assert "That message is 3994 characters long; I read questions of up to 500." in p["text"]


def test_configured_command_name(slack, service):
    b = Bot(slack, service.url, command="/vmmove")
    try:
        assert post(b, slash(slack, "help", command="/vmmove"), FORM).status_code == 200
        assert "/vmmove 101 node3" in answers(slack)[0]["params"]["text"]
    finally:
        b.stop()
