"""Escaping and the shape of answers (pure, no I/O), and the app manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migration_guard.api import models
from migration_guard.errors import ServiceUnavailable, UnknownVmError
from migration_guard_bot.answers import (
    answer,
    decisions_answer,
    recommendation_answer,
    targets_answer,
    verdict_answer,
)
from migration_guard_bot.blocks import section
from migration_guard_bot.messages import code, escape, plain, prose
from migration_guard_bot.parser import Check, Help, Recommend, Targets
from tests.bot.support import FakeService, verdict_body, veto_event

ROOT = Path(__file__).resolve().parents[2]


def test_escape_the_three_characters_slack_asks_for():
    assert (
        escape("a & b <!channel> <@U1> <https://x|y>")
        == "a &amp; b &lt;!channel&gt; &lt;@U1&gt; &lt;https://x|y&gt;"
    )
    assert escape("tab\there\x00\x07") == "tab\there"


def test_code_cannot_be_closed_from_inside():
    assert code("we`ird *vm*") == "`weˋird *vm*`"
    assert code("") == "`?`"
    assert code("<!here>") == "`&lt;!here&gt;`"


def test_prose_neutralises_markers_but_keeps_flag_names():
    assert prose("*bold* and _it_ and ~s~ `c`") == "∗bold∗ and ＿it＿ and ∼s∼ ˋcˋ"
    assert prose("missing sse4_1, avx512_bf16") == "missing sse4_1, avx512_bf16"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_no_foreign_string_can_open_a_slack_control_sequence(name):
    for out in (escape(name), code(name), prose(name), plain(name)):
        assert "<" not in out and ">" not in out
    msg = verdict_answer(verdict_body(name=name, target=name[:20] or "n"), veto=False)
    flat = msg.text + json.dumps(msg.blocks, ensure_ascii=False)
    assert "<" not in flat and ">" not in flat


def test_every_mrkdwn_object_is_verbatim():
    msg = verdict_answer(veto_event(), veto=True)
    objs = [b["text"] for b in msg.blocks if "text" in b]
    objs += [f for b in msg.blocks for f in b.get("fields", [])]
    objs += [e for b in msg.blocks for e in b.get("elements", [])]
    assert objs and all(o["verbatim"] is True for o in objs if o["type"] == "mrkdwn")


def test_veto_message_has_headline_vm_cpu_move_reasons_suggestion():
    msg = verdict_answer(veto_event(name="web01"), veto=True)
    flat = json.dumps(msg.blocks, ensure_ascii=False)
    assert (
        msg.blocks[0]["text"]["text"] == "*:no_entry: Blocked:* live migration of VM 101 `web01` to `node3`"
    )
    assert "*VM*\\nVM 101 `web01`" in flat and "*CPU type*\\n`Skylake-Server`" in flat
    assert "*Move*\\n`node1` → `node3`" in flat
    assert "*Why*\\n• node3 lacks avx512f (`missing-flags`)" in flat
    assert "*Suggestion*\\nuse x86-64-v3" in flat
    assert msg.text == (
        "Blocked: live migration of VM 101 (web01) to node3 (CPU type Skylake-Server), "
        "from node1. Why: node3 lacks avx512f. Suggestion: use x86-64-v3"
    )


def test_warn_mode_veto_says_it_was_not_stopped():
    msg = verdict_answer(veto_event(enforced=False), veto=True)
    assert msg.text.startswith("Would block (warn mode): live migration of VM 101 (web01) to node3")


def test_cross_cluster_veto_names_the_target_cluster():
    msg = verdict_answer(veto_event(target_cluster="clusterB", target="node5"), veto=True)
    assert "to clusterB/node5" in msg.text


def test_long_reason_lists_stay_within_slack_limits():
    body = verdict_body(reasons=[{"code": "missing-flags", "message": "x" * 500}] * 40)
    for block in verdict_answer(body).blocks:
        if "text" in block:
            assert len(block["text"]["text"]) <= 3000


def test_targets_name_the_clusters_and_nodes_not_asked():
    body = {
        "targets": [verdict_body(target="node2", verdict="allow")],
        "errors": [
            {"cluster": "intel", "code": "unreachable", "message": "cannot reach Proxmox at pvb:8006"},
            {"cluster": "amd2", "node": "pvc3", "code": "unknown-node", "message": "node pvc3 is gone"},
        ],
    }
    t = targets_answer(101, body)
    assert t.text.endswith(
        "Not asked: intel (cannot reach Proxmox at pvb:8006); amd2/pvc3 (node pvc3 is gone)."
    ), t.text
    assert "can move to 1 of 1 other nodes" in t.text
    assert "Not asked: intel" in json.dumps(t.blocks)


def test_targets_recommendation_decisions_shapes():
    t = targets_answer(101, {"targets": [verdict_body(target="node2", verdict="allow"), verdict_body()]})
    assert "can move to 1 of 2 other nodes" in t.text
    r = recommendation_answer(
        {"recommended": "x86-64-v2-AES", "nodes": [], "nodes_without_flags": [], "vms_at_risk": []}
    )
    assert r.text == "Recommended CPU type: x86-64-v2-AES. Every VM's CPU type runs on every node."
    d = decisions_answer(None, [])
    assert d.text == "No recent decisions for the cluster."


class DownService:
    def check(self, *a, **k):
        raise ServiceUnavailable("the migration-guard service at http://svc:8000 did not answer in time")

    targets = decisions = recommendation = check

    def cluster(self):
        raise ServiceUnavailable("down")


class NoVmService(DownService):
    def check(self, *a, **k):
        raise UnknownVmError("no VM 555 in cluster lab")

    def cluster(self):
        return {"nodes": [{"name": "pve1", "online": True}, {"name": "pve2", "online": True}]}


def test_service_down_answer_is_one_line():
    a = answer(Check(101, "node3"), DownService())
    assert a.text == (
        "Cannot answer right now: the migration-guard service at http://svc:8000 "
        "did not answer in time. Try again in a minute."
    )
    assert a.blocks == [section(":warning: " + prose(a.text))]


def test_unknown_vm_names_the_known_nodes():
    a = answer(Check(555, "pve1"), NoVmService())
    assert a.text == "No VM 555 in cluster lab. Is the VM ID right? Known nodes: pve1, pve2."


def test_help_lists_examples_with_the_configured_command():
    a = answer(Help(), DownService(), "/vmmove")
    assert "/vmmove 101 node3" in a.text and "where can vm 101 go?" in a.text


def test_manifest_declares_command_scopes_events_and_socket_mode():
    yaml = pytest.importorskip("yaml")
    m = yaml.safe_load((ROOT / "deploy" / "slack-app-manifest.yml").read_text())
    assert [c["command"] for c in m["features"]["slash_commands"]] == ["/canmove"]
    assert {"app_mentions:read", "chat:write", "commands", "im:history"} <= set(
        m["oauth_config"]["scopes"]["bot"]
    )
    assert set(m["settings"]["event_subscriptions"]["bot_events"]) == {
        "app_home_opened",
        "app_mention",
        "message.im",
    }
    assert m["settings"]["socket_mode_enabled"] is True and m["features"]["app_home"]["home_tab_enabled"]


class GuessedShapes(DownService):
    """A service answering lists under names the API does not document."""

    def targets(self, *a, **k):
        return {"vmid": 101, "verdicts": [verdict_body(target="node2", verdict="allow")]}

    def recommendation(self, *a, **k):
        return {"recommendation": {"cpu_type": "x86-64-v3"}, "vms": []}

    def cluster(self):
        return {"nodes": [{"node": "pve1"}]}

    def ha_risks(self):
        return {"vms_at_risk": []}


def test_the_bot_reads_the_documented_fields_only():
    """``targets`` is the one list of a /targets answer and ``recommended`` the recommendation's
    type: a body that names them otherwise is not read as an answer (and never as "no node")."""
    for intent in (Targets(101), Recommend()):
        a = answer(intent, GuessedShapes())
        assert a.text == (
            "Cannot answer: the service answered something the bot cannot read; "
            "are the bot and the service the same version?"
        ), a.text
    unknown = answer(Check(555, "pve1"), type("NoVm", (GuessedShapes,), {"check": NoVmService.check})())
    assert unknown.text == "No VM 555 in cluster lab. Is the VM ID right?"


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/v1/vms/101/check", models.VerdictBody),
        ("/v1/vms/101/targets", models.TargetsBody),
        ("/v1/decisions", models.DecisionsBody),
        ("/v1/cluster", models.ClusterView),
        ("/v1/cluster/recommendation", models.RecommendationBody),
    ],
)
def test_the_fake_service_answers_the_documented_shapes(path, model):
    """The bot's tests talk to a fake of the API: it answers what GET /openapi.json documents."""
    with FakeService() as fake:
        status, body = fake.route(path, {"target": "node2"})
    assert status == 200
    model.model_validate(body)


def test_the_app_home_reads_the_documented_fields_only():
    """The App Home reads ``nodes[].name``, ``recommended`` and the decision records as the API
    documents them: a body that names them otherwise says it cannot be read (it used to show a
    guessed ``cpu_type`` as the recommended type)."""
    from migration_guard_bot.home import home_view

    class Guessed(GuessedShapes):
        def decisions(self, *a, **k):
            return [{"verdict": "deny", "vmid": 101, "time": "2026-12-06T10:00:00Z"}]

    text = json.dumps(home_view(Guessed())["blocks"])
    assert "x86-64-v3" not in text
    assert text.count("the service answered something the bot cannot read") == 3, text

    class Documented(Guessed):
        def cluster(self):
            return {
                "nodes": [
                    {
                        "name": "pve1",
                        "online": True,
                        "cpu_model": "EPYC 7702",
                        "vendor": "amd",
                        "best_cpu_type": "EPYC-Rome",
                        "pve_version": "9.2.1",
                        "qemu_version": "10.1",
                    }
                ],
                "rolling_upgrade": None,
            }

        def recommendation(self, *a, **k):
            return {"recommended": "x86-64-v3", "reason": None, "vms_at_risk": []}

        def ha_risks(self):
            return {"risks": [], "ha_vms": 2}

    text = json.dumps(home_view(Documented())["blocks"])
    assert "cannot read" not in text
    assert "`pve1`" in text and "EPYC-Rome" in text and "PVE 9.2.1, QEMU 10.1" in text
    assert "`x86-64-v3`" in text and "VM 101" in text
