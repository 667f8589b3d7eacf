"""The Approve button of an override: a signed interactive request to the real Bolt app (over HTTP),
which asks the real service (uvicorn, proxmoxer to the Proxmox-shaped test server with the demo
cluster, real Redis); answers go to the Slack-API-shaped server.

The requester cannot approve (the service refuses; the clicker is told its sentence), an unsigned
click changes nothing, a second person approves (the message says who), and a spent override says
so. With the bot's Redis, the request is shown on the veto message of its VM and target, and the
approval redraws that message."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
from slack_sdk import WebClient

from migration_guard.client import ServiceClient
from migration_guard.service.guard import GuardService
from migration_guard.store.redis_store import Store, connect
from migration_guard_bot.listeners.deps import Deps
from migration_guard_bot.notifier import Notifier
from tests.bot.signed_requests import FORM, Bot, event, post
from tests.bot.support import REDIS_URL
from tests.fakes.clock import Clock
from tests.fakes.pve import reader_for
from tests.fakes.slack_api_server import SlackApiServer
from tests.support.service_stack import flushed_redis, serving, settings_for

pytestmark = pytest.mark.integration
api = pytest.importorskip("migration_guard.api.app")
pve_server = pytest.importorskip("migration_guard.demo.pve_server")

TOKEN = "bot-actions-token"
CHANNEL = "C0VETO"
REASON = "the guest never uses AVX-512"


@pytest.fixture()
def stack():
    """The service with a clock the test sets (an override's lifetime passes without waiting)."""
    store = flushed_redis(REDIS_URL, decode_responses=True)
    pve = pve_server.start_server("demo")
    settings = settings_for(
        pve, api_tokens=TOKEN, pve_cluster_name="demo", redis_url=REDIS_URL, pve_timeout=2
    )
    client, kind = connect(REDIS_URL)
    clock = Clock()
    service = GuardService(settings, reader_for(pve), Store(client, kind), clock=clock)
    app = api.create_app(service, (TOKEN,))
    with serving(app) as url, SlackApiServer() as slack:
        bot = Bot(slack, url, token=TOKEN, store=store, channel=CHANNEL)
        bot.clock = clock  # type: ignore[attr-defined]
        try:
            yield bot, slack, store
        finally:
            bot.stop()
    pve.stop()
    store.flushdb()


def click(bot: Bot, slack: SlackApiServer, user: str, override_id: str, block_id: str, rid: str) -> None:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0TEST"},
        "api_app_id": "A0APP",
        "token": "legacy",
        "team": {"id": "T0TEST", "domain": "test"},
        "container": {"type": "message", "message_ts": "1.0", "channel_id": CHANNEL, "is_ephemeral": False},
        "channel": {"id": CHANNEL, "name": "ops"},
        "trigger_id": "1.2.3",
        "response_url": slack.response_url(rid),
        "actions": [
            {
                "type": "button",
                "action_id": "override_approve",
                "block_id": block_id,
                "value": override_id,
                "action_ts": str(time.time()),
            }
        ],
    }
    r = post(bot, urlencode({"payload": json.dumps(payload)}), FORM)
    assert r.status_code == 200, r.text


def responses(slack: SlackApiServer, rid: str, n: int = 1) -> list[dict]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = [c["params"] for c in slack.calls("response_url") if c["params"].get("_path_id") == rid]
        if len(got) >= n:
            return got
        time.sleep(0.05)
    raise AssertionError(f"no answer on response_url {rid}: {slack.calls()}")


def status_of(service: ServiceClient, override_id: str) -> dict:
    return next(o for o in service.overrides() if o["id"] == override_id)


def request(bot: Bot, user: str = "U0ASK") -> dict:
    """The override asked for as a mention or DM asks (the listeners' answer path)."""
    deps = Deps(service=bot.service, store=None)
    reply = deps.answer_text(f"override 104 to pve-atom1 because {REASON}", user)
    assert reply.override is not None, reply.text
    return reply.override


def test_the_requester_cannot_approve_a_second_person_can(stack):
    bot, slack, _store = stack
    asked = request(bot)
    oid = asked["id"]
    assert asked["status"] == "pending" and asked["requested_by"] == "slack:U0ASK"

    click(bot, slack, "U0ASK", oid, f"override:{oid}", "self")
    said = responses(slack, "self")[0]
    assert said["response_type"] == "ephemeral" and said["text"].startswith("Not approved: ")
    assert "approve" in said["text"].lower()  # the service's own sentence
    assert status_of(bot.service, oid)["status"] == "pending"

    unsigned = post(bot, urlencode({"payload": json.dumps({"type": "block_actions"})}), FORM, headers={})
    assert unsigned.status_code == 401
    assert status_of(bot.service, oid)["status"] == "pending"

    click(bot, slack, "U0OTHER", oid, f"override:{oid}", "other")
    shown = responses(slack, "other")[0]
    assert shown["replace_original"] is True
    assert "Override approved" in shown["text"] and "approved by @U0OTHER" in shown["text"]
    assert "<@U0OTHER>" in json.dumps(shown["blocks"])
    assert not any(b["type"] == "actions" for b in shown["blocks"])  # no button once approved
    got = status_of(bot.service, oid)
    assert got["status"] == "approved" and got["approved_by"] == "slack:U0OTHER"


def test_a_spent_override_says_so(stack):
    bot, slack, _store = stack
    oid = request(bot)["id"]
    bot.service.approve_override(oid, "slack:U0OTHER")
    decided = bot.service.decide(104, "pve-atom1", source="pve-xeon-csl")
    assert decided["verdict"] == "allow"  # the override let it through, once
    assert status_of(bot.service, oid)["status"] == "spent"

    click(bot, slack, "U0THIRD", oid, f"override:{oid}", "late")
    said = responses(slack, "late", 2)
    told = next(p for p in said if p.get("response_type") == "ephemeral")
    assert told["text"].startswith("Not approved: ") and "spent" in told["text"]
    redrawn = next(p for p in said if p.get("replace_original"))
    assert "Override used" in redrawn["text"]


def test_an_expired_override_says_so(stack):
    bot, slack, _store = stack
    asked = request(bot)
    bot.clock.now += asked["ttl_s"] + 1  # type: ignore[attr-defined]
    click(bot, slack, "U0OTHER", asked["id"], f"override:{asked['id']}", "expired")
    said = responses(slack, "expired", 2)
    told = next(p for p in said if p.get("response_type") == "ephemeral")
    assert told["text"].startswith("Not approved: ") and "expired" in told["text"]
    redrawn = next(p for p in said if p.get("replace_original"))
    assert redrawn["text"].startswith(
        "Override expired: VM 104 to pve-atom1 was not approved or used in time"
    )
    assert status_of(bot.service, asked["id"])["status"] == "expired"


def test_the_veto_message_shows_the_request_and_the_approval(stack):
    bot, slack, store = stack
    vetoed = bot.service.decide(104, "pve-atom1", source="pve-xeon-csl")
    assert vetoed["verdict"] == "deny"
    notifier = Notifier(store, WebClient(token="xoxb-test", base_url=slack.url), CHANNEL, block_ms=200)
    notifier.ensure_group()
    assert notifier.read_new() == 1
    veto_ts = slack.messages(CHANNEL)[0]["ts"]
    assert "override 104 to pve-atom1 because" in json.dumps(slack.messages(CHANNEL)[0]["blocks"])

    deps = Deps(service=bot.service, store=store, channel=CHANNEL, slack=bot.app.client)
    oid = deps.answer_text(f"override 104 to pve-atom1 because {REASON}", "U0ASK").override["id"]  # type: ignore[index]
    veto = next(m for m in slack.messages(CHANNEL) if m["ts"] == veto_ts)
    assert veto["edits"] >= 1 and "Override requested" in veto["text"]
    buttons = [b for b in veto["blocks"] if b["type"] == "actions"]
    assert buttons and buttons[0]["block_id"] == f"veto-override:{oid}"

    click(bot, slack, "U0OTHER", oid, buttons[0]["block_id"], "veto")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        veto = next(m for m in slack.messages(CHANNEL) if m["ts"] == veto_ts)
        if "Override approved" in veto["text"]:
            break
        time.sleep(0.05)
    assert "Override approved" in veto["text"] and "approved by @U0OTHER" in veto["text"]
    assert "Blocked" in veto["text"]  # still the veto message, redrawn whole
    assert not any(b["type"] == "actions" for b in veto["blocks"])
    assert not [c for c in slack.calls("response_url") if c["params"].get("replace_original")]


def test_an_override_asked_in_a_mention_records_the_slack_user_and_carries_the_button(stack):
    bot, slack, _store = stack
    inner = {
        "type": "app_mention",
        "user": "U0MENTION",
        "text": f"<@U0BOT> override 104 to pve-atom1 because {REASON}",
        "ts": "1700000000.000100",
        "channel": "C0ASK",
        "event_ts": "1700000000.000100",
    }
    assert post(bot, event(inner), "application/json").status_code == 200
    (call,) = slack.wait_for("chat.postMessage", 1, timeout=15)
    p = call["params"]
    assert p["text"].startswith("Override requested: VM 104 to pve-atom1, once.")
    [buttons] = [b for b in p["blocks"] if b["type"] == "actions"]
    asked = status_of(bot.service, buttons["elements"][0]["value"])
    assert asked["requested_by"] == "slack:U0MENTION" and asked["reason"] == REASON
