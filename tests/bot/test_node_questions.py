"""The newer questions against the real service (uvicorn; proxmoxer to the Proxmox-shaped test
server with the demo cluster: two HA VMs, db01 pinned by the strict rule db-pinned to pve-atom1,
which cannot run its x86-64-v3; real Redis), through the same ``answer`` every listener and the
console use; the HA risk poster and the evacuation digest post to the Slack-API-shaped server."""

from __future__ import annotations

import json
import os
import time

import pytest
from slack_sdk import WebClient

from migration_guard.client import ServiceClient
from migration_guard.errors import ServiceUnavailable
from migration_guard_bot.answers import answer
from migration_guard_bot.digest_poster import BURST_KEY, OPEN_KEY, DigestPoster
from migration_guard_bot.ha_poster import RISKS_KEY, HaRiskPoster
from migration_guard_bot.home import home_view
from migration_guard_bot.parser import parse
from tests.bot.support import REDIS_URL
from tests.bot.test_console import run_cli
from tests.fakes.slack_api_server import SlackApiServer
from tests.support.service_stack import flushed_redis, serving, settings_for

pytestmark = pytest.mark.integration
api = pytest.importorskip("migration_guard.api.app")
guard = pytest.importorskip("migration_guard.service.guard")
pve_server = pytest.importorskip("migration_guard.demo.pve_server")

TOKEN = "bot-node-questions-token"
CHANNEL = "C0OPS"


@pytest.fixture(scope="module")
def stack():
    store = flushed_redis(REDIS_URL, decode_responses=True)
    pve = pve_server.start_server("demo")
    settings = settings_for(
        pve, api_tokens=TOKEN, pve_cluster_name="demo", redis_url=REDIS_URL, pve_timeout=2
    )
    app = api.create_app(guard.build_service(settings), settings.bearer_tokens())
    with serving(app) as url:
        client = ServiceClient(url, TOKEN, timeout=15)
        yield client, store
        client.close()
    pve.stop()
    store.flushdb()


@pytest.fixture()
def slack():
    with SlackApiServer() as server:
        yield server


def ask(stack, text: str, user: str = "") -> str:
    return answer(parse(text), stack[0], user=user).text


def test_maintenance_answer_is_a_summary_then_the_stuck_vms_first(stack):
    got = answer(parse("can I put PVE-XEON-CSL in maintenance?"), stack[0])
    assert got.text.startswith("pve-xeon-csl maintenance: 3 VMs, 1 can move, 2 stuck (2 HA-managed).")
    stuck_at, movable_at = got.text.index("Stuck: "), got.text.index("Can move: ")
    assert stuck_at < movable_at
    stuck = got.text[stuck_at:movable_at]
    assert "VM 103 (db01)" in stuck and "VM 104 (analytics01)" in stuck and "fix: " in stuck
    assert "VM 102 (web01) (x86-64-v2-AES) -&gt; pve-epyc1, pve-xeon-bdw, pve-atom1" in got.text
    assert [b["type"] for b in got.blocks][:3] == ["section", "section", "section"]


def test_the_same_question_asked_other_ways(stack):
    first = ask(stack, "evacuate pve-xeon-csl")
    assert first.split(" · checked")[0] == ask(stack, "evacuat pve-xeon-csl").split(" · checked")[0]  # a typo
    assert first.split(".")[0] == ask(stack, "is it safe to put pve-xeon-csl in maintenance").split(".")[0]


def test_what_if_the_node_goes_down_tells_ha_from_the_rest(stack):
    got = ask(stack, "what happens if pve-xeon-csl goes down?")
    assert got.startswith(
        "If pve-xeon-csl goes down: HA restarts its 2 HA-managed VMs elsewhere, 1 of them cannot start "
        "where HA may put them; 1 other VM stays down until it is back."
    )
    assert "Cannot start anywhere HA may put them: VM 103 (db01)" in got
    assert "Not HA-managed, down until pve-xeon-csl is back: VM 104 (analytics01)." in got


def test_ha_risks_and_the_app_home_count(stack):
    got = ask(stack, "HA risks")
    assert got.startswith("1 of 2 HA VMs may be recovered on a node that cannot run them")
    assert "VM 103 (db01) (x86-64-v3, HA db-pinned) - pve-atom1: pve-atom1 lacks abm, avx" in got
    home = json.dumps(home_view(stack[0]))
    assert "*HA recovery risks*" in home and "*1* HA VM(s) may be recovered" in home


def test_which_nodes_run_a_type(stack):
    got = ask(stack, "which nodes can run x86-64-v3?")
    assert got == (
        "x86-64-v3 runs on pve-epyc1, pve-xeon-bdw, pve-xeon-csl; not on pve-atom1 "
        "(lacks abm, avx, avx2, bmi1, bmi2, f16c, fma)."
    )


def test_vm_names_and_node_names_in_any_case(stack):
    assert ask(stack, "where can web01 go?").startswith("VM 102 (web01) on pve-xeon-csl: can move to 3 of 3")
    assert ask(stack, "can web01 move to PVE-ATOM1?").startswith("YES: VM 102 (web01) can move to pve-atom1")
    assert ask(stack, "why can't analytics01 go to pve-atom1").startswith("NO: VM 104 (analytics01)")
    missing = ask(stack, "where can web1 go")
    assert "There is no VM named web1 (did you mean web01?)" in missing and "Is the name right?" in missing


def test_an_override_request_names_who_asked(stack):
    got = answer(
        parse("override 104 to pve-atom1 because the guest never uses AVX-512"), stack[0], user="slack:U0A"
    )
    assert got.override is not None and got.override["requested_by"] == "slack:U0A"
    assert got.text.startswith("Override requested: VM 104 to pve-atom1, once.")
    assert any(b["type"] == "actions" for b in got.blocks)
    assert "pending VM 104 -&gt; pve-atom1" in ask(stack, "pending overrides")


def test_ha_risks_are_posted_once_and_once_when_cleared(stack, slack):
    client, store = stack
    store.delete(RISKS_KEY)
    web = WebClient(token="xoxb-test", base_url=slack.url)
    assert HaRiskPoster(store, web, CHANNEL, client).poll_once() == (1, 0)
    posted = slack.messages(CHANNEL)
    assert len(posted) == 1 and posted[0]["text"].startswith("New HA recovery risk (1 VM)")
    assert "VM 103 (db01)" in posted[0]["text"]
    assert HaRiskPoster(store, web, CHANNEL, client).poll_once() == (0, 0)  # a restarted bot: nothing new

    class Down:
        def ha_risks(self):
            raise ServiceUnavailable("the service is not answering")

    assert HaRiskPoster(store, web, CHANNEL, Down()).poll_once() is None  # no answer is no "cleared"
    assert store.hlen(RISKS_KEY) == 1

    class Fixed:  # the real answer once db01's CPU type runs on pve-atom1: no risk left
        def ha_risks(self):
            return dict(client.ha_risks(), risks=[])

    assert HaRiskPoster(store, web, CHANNEL, Fixed()).poll_once() == (0, 1)
    cleared = slack.messages(CHANNEL)[-1]["text"]
    assert cleared.startswith("HA recovery risk cleared") and "VM 103 (db01) on pve-atom1" in cleared
    assert len(slack.messages(CHANNEL)) == 2 and store.hlen(RISKS_KEY) == 0


def test_an_evacuation_is_one_digest_edited_as_decisions_arrive(stack, slack):
    client, store = stack
    web = WebClient(token="xoxb-test", base_url=slack.url)
    poster = DigestPoster(store, web, CHANNEL, client, window_s=2, min_vms=3, block_ms=100)
    poster.step(block_ms=0)  # the cursor: from now on
    client.decide(102, "pve-epyc1", source="pve-xeon-csl")
    client.decide(103, "pve-atom1", source="pve-xeon-csl")
    client.decide(108, "pve-epyc1", source="pve-atom1")  # another node, one VM: no digest
    assert poster.step() == 3 and slack.messages(CHANNEL) == []  # 2 VMs of pve-xeon-csl: not yet
    client.decide(104, "pve-epyc1", source="pve-xeon-csl")
    poster.step()
    [digest] = slack.messages(CHANNEL)
    assert digest["text"].startswith(
        "pve-xeon-csl evacuation: 3 VMs, 1 moved, 2 blocked: VM 103 (db01) (x86-64-v3"
    )
    assert "VM 104 (analytics01) (x86-64-v4, nowhere to go; fix: CPU type Broadwell-v4)" in digest["text"]
    for _retry in range(3):  # HA retries the blocked VM every ~10 s: the same VM, one message
        client.decide(103, "pve-atom1", source="pve-xeon-csl")
    restarted = DigestPoster(store, web, CHANNEL, client, window_s=2, min_vms=3, block_ms=100)
    restarted.step()
    [again] = slack.messages(CHANNEL)
    assert again["ts"] == digest["ts"] and again["edits"] >= 1
    assert again["text"].startswith("pve-xeon-csl evacuation: 3 VMs, 1 moved, 2 blocked")
    time.sleep(2.3)
    assert restarted.end_quiet() == 2  # both bursts (pve-xeon-csl, and pve-atom1's one VM)
    [ended] = slack.messages(CHANNEL)
    assert "· ended ·" in json.dumps(ended["blocks"], ensure_ascii=False) and store.scard(OPEN_KEY) == 0
    assert store.get(BURST_KEY.format(node="demo/pve-xeon-csl")) is None


def test_the_console_answers_each_new_question(stack):
    """``migration-guard bot --console`` (a subprocess) against the real service: every new question."""
    client, _store = stack
    env = dict(os.environ, MIGRATION_GUARD_URL=client.url, MIGRATION_GUARD_TOKEN=TOKEN)
    out = run_cli(
        "bot",
        "--console",
        env=env,
        stdin="\n".join(
            [
                "can I put pve-xeon-csl in maintenance?",
                "what happens if pve-xeon-csl goes down?",
                "HA risks",
                "which nodes can run x86-64-v3?",
                "where can web01 go?",
                "mvoe 101 to pve-xeon-bdw",
                "override 104 to pve-atom1 because the guest never uses AVX-512",
                "overrides",
            ]
        )
        + "\n",
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "⛔ pve-xeon-csl maintenance: 3 VMs, 1 can move, 2 stuck (2 HA-managed)." in text
    assert "⛔ If pve-xeon-csl goes down: HA restarts its 2 HA-managed VMs elsewhere" in text
    assert "⚠️ 1 of 2 HA VMs may be recovered on a node that cannot run them" in text
    assert "x86-64-v3 runs on 3 of 4 nodes" in text and "• ⛔ pve-atom1 (lacks abm, avx" in text
    assert "VM 102 web01 on pve-xeon-csl: can move to 3 of 3 other nodes" in text
    assert "⛔ No: VM 101 build01 cannot move to pve-xeon-bdw" in text
    assert "⏳ Override requested: VM 104 to pve-atom1, once" in text and "[Approve]" in text
    assert "Overrides, newest first" in text
    assert "did not understand" not in text and "Traceback" not in out.stderr
