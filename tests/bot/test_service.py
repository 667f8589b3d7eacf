"""The bot against the real compatibility service: migration_guard.api.app over HTTP (uvicorn), proxmoxer
speaking HTTPS to the Proxmox-shaped test server, real Redis (DB 2), and the Slack-API-shaped
server. A veto decided by the service reaches Slack through the stream and the notifier."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from slack_sdk import WebClient

from migration_guard.client import ServiceClient
from migration_guard_bot.answers import answer
from migration_guard_bot.home import home_view
from migration_guard_bot.notifier import Notifier
from migration_guard_bot.parser import parse
from tests.bot.support import REDIS_URL
from tests.fakes.slack_api_server import SlackApiServer
from tests.support.service_stack import flushed_redis, serving, settings_for

pytestmark = pytest.mark.integration
api = pytest.importorskip("migration_guard.api.app")
service_mod = pytest.importorskip("migration_guard.service.guard")
pve_testserver = pytest.importorskip("migration_guard.demo.pve_server")

SCENARIO = Path(__file__).parents[1] / "fixtures" / "service" / "scenario.json"
CATALOG = Path(__file__).resolve().parents[2] / "shared" / "migration_guard" / "data" / "cpu_models.json"
TOKEN = "bot-integration-token"


@pytest.fixture(scope="module")
def stack():
    if not SCENARIO.exists():
        pytest.skip("tests/fixtures/service/scenario.json is not there")
    patch = pytest.MonkeyPatch()
    if not CATALOG.exists():  # until the packaged catalog lands: the engine tests' inline catalog
        from migration_guard.engine import cpu_models
        from tests.engine.test_engine import MODELS

        inline = cpu_models.load_catalog(json.dumps({"schema": 1, "provenance": {}, "models": MODELS}))
        patch.setattr(cpu_models, "catalog", lambda: inline)
    store = flushed_redis(REDIS_URL, decode_responses=True)
    pve = pve_testserver.start_server(json.loads(SCENARIO.read_text()))
    settings = settings_for(pve, api_tokens=TOKEN, pve_cluster_name="lab", redis_url=REDIS_URL, pve_timeout=2)
    app = api.create_app(service_mod.build_service(settings), settings.bearer_tokens())
    with serving(app) as url:
        client = ServiceClient(url, TOKEN, timeout=15)
        yield client, store
        client.close()
    pve.stop()
    store.flushdb()
    patch.undo()


def ask(stack, text: str):
    return answer(parse(text), stack[0])


def test_check_deny_and_allow(stack):
    no = ask(stack, "can vm 101 move to pve3?")
    assert no.text.startswith("NO: VM 101 (web01) cannot move to pve3 (CPU type x86-64-v4), from pve1. Why: ")
    assert "missing-flags" in json.dumps(no.blocks)
    yes = ask(stack, "/canmove 101 pve2".removeprefix("/canmove "))
    assert yes.text.startswith("YES: VM 101 (web01) can move to pve2")


def test_targets_lists_every_other_node(stack):
    a = ask(stack, "where can vm 101 go?")
    assert a.text.startswith("VM 101 (web01) on pve1: can move to ")
    for node in ("pve2", "pve3", "pve4", "pve5"):
        assert f"{node}: " in a.text
    assert ". pve1: " not in a.text and "; pve1: " not in a.text


def test_unknown_vm_and_node_name_the_known_nodes(stack):
    vm = ask(stack, "can vm 999 move to pve2")
    assert (
        vm.text == "Cluster lab has no VM 999. Is the VM ID right? Known nodes: pve1, pve2, pve3, pve4, pve5."
    )
    node = ask(stack, "can vm 101 move to pve33")
    assert node.text.startswith("There is no node pve33. Did you mean pve3? Known nodes: pve1, pve2, pve3")


def test_recommendation_and_vms_at_risk(stack):
    a = ask(stack, "which cpu type should we use?")
    assert a.text.startswith("Recommended CPU type for pve1, pve2, pve3, pve4: ")
    assert "VMs whose CPU type some node cannot run" in a.text
    assert "VM 101 (web01) (x86-64-v4) cannot run on pve3 (lacks " in a.text
    sub = ask(stack, "recommend for pve1 pve2")
    assert sub.text.startswith("Recommended CPU type for pve1, pve2: ")


def test_decisions_and_the_veto_reach_slack(stack):
    client, store = stack
    import httpx

    decided = httpx.post(
        f"{client.url}/v1/decisions",
        json={"vmid": 101, "target": "pve3", "source": "pve1"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=15,
    ).json()
    assert decided["verdict"] == "deny"
    recent = ask(stack, "why was 101 blocked?")
    assert (
        recent.text.startswith("Latest decisions for VM 101: ")
        and "deny VM 101 (web01) pve1 → pve3" in recent.text
    )
    with SlackApiServer() as slack:
        notifier = Notifier(
            store, WebClient(token="xoxb-test", base_url=slack.url, retry_handlers=[]), "C0VETO", block_ms=100
        )
        notifier.ensure_group()
        # the service wrote the event before the group existed: the first start looks back an hour
        thread = threading.Thread(target=notifier.run, daemon=True)
        thread.start()
        try:
            (post,) = slack.wait_for("chat.postMessage", 1, timeout=15)
        finally:
            notifier.stop()
            thread.join(5)
    assert post["params"]["text"].startswith("Blocked: live migration of VM 101 (web01) to pve3")
    assert f"event `{decided['decision_id']}`" in json.dumps(post["params"]["blocks"])


def test_home_tab_from_the_real_cluster_view(stack):
    view = home_view(stack[0])
    flat = json.dumps(view["blocks"], ensure_ascii=False)
    assert "`pve1`" in flat and "`pve5` (offline)" in flat
    assert "*Recommended CPU type*\\n`" in flat
