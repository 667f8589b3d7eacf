"""The bot's coverage watch and App Home line against the real service (demo cluster over the
Proxmox-shaped test server) and the Slack Web API stand-in; a clock the test moves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from slack_sdk import WebClient

from migration_guard.api.app import create_app
from migration_guard.client import ServiceClient
from migration_guard.errors import ConfigError
from migration_guard.service.guard import build_service
from migration_guard_bot.coverage_watch import CoverageWatch, poll_interval
from migration_guard_bot.home import home_view
from migration_guard_bot.settings import BotSettings
from tests.fakes.pve import pve_server
from tests.fakes.slack_api_server import SlackApiServer
from tests.support.service_stack import serving, settings_for

TOKEN = "coverage-bot-token"
DEMO = json.loads(
    (Path(__file__).resolve().parents[2] / "shared/migration_guard/data/demo_scenario.json").read_text()
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def service():
    with pve_server(DEMO) as pve:
        settings = settings_for(pve, api_tokens=TOKEN, pve_cluster_name="demo", redis_url="memory://")
        with serving(create_app(build_service(settings), settings.bearer_tokens())) as url:
            client = ServiceClient(url, TOKEN, timeout=30)
            yield client
            client.close()


def test_a_running_vm_unguarded_longer_than_the_setting_is_posted_once(service):
    clock = Clock()
    with SlackApiServer() as slack:
        web = WebClient(token="xoxb-test", base_url=slack.url, retry_handlers=[])
        watch = CoverageWatch(service, web, "C0GUARD", after_s=1800, clock=clock)
        assert watch.poll_once() == []  # first seen now
        clock.now += 1799
        assert watch.poll_once() == []
        clock.now += 1
        posted = watch.poll_once()
        assert [vm["vmid"] for vm in posted] == [104, 106]  # 108 is stopped: nothing to migrate
        clock.now += 600
        assert watch.poll_once() == []  # said once
        (post,) = slack.calls("chat.postMessage")
    text = post["params"]["text"]
    assert post["params"]["channel"] == "C0GUARD"
    assert text.startswith(
        "2 running VM(s) without the migration-guard hookscript for over 30 min: their live migrations "
        "are not checked: VM 104 analytics01 on pve-xeon-csl, VM 106 cache01 on pve-epyc1."
    )
    assert "migration-guard-hook attach" in json.dumps(post["params"]["blocks"])


def test_a_vm_that_gets_the_hook_is_forgotten_and_timed_again_when_it_loses_it():
    bodies = []

    class Service:
        def coverage(self):
            return bodies[-1]

    def body(*unguarded):
        return {
            "cluster": "c1",
            "unguarded": [{"vmid": v, "name": "", "node": "n1", "status": "running"} for v in unguarded],
        }

    clock = Clock()
    posts = []

    class Slack:
        def chat_postMessage(self, **kw):  # noqa: N802 (slack_sdk's name)
            posts.append(kw)

    watch = CoverageWatch(Service(), Slack(), "C1", after_s=60, clock=clock)
    bodies.append(body(101))
    watch.poll_once()
    clock.now += 60
    assert [v["vmid"] for v in watch.poll_once()] == [101]
    bodies.append(body())  # attached (by the timer)
    assert watch.poll_once() == [] and watch.since == {}
    bodies.append(body(101))  # lost it again: timed from now
    clock.now += 30
    assert watch.poll_once() == []
    clock.now += 60
    assert [v["vmid"] for v in watch.poll_once()] == [101] and len(posts) == 2


def test_the_app_home_shows_the_count(service):
    flat = json.dumps(home_view(service)["blocks"], ensure_ascii=False)
    assert (
        "*Coverage*\\n5 of 8 VMs guarded; 3 without the hookscript (VM 104, VM 106, VM 108); "
        "5 with the hookscript file missing on a node" in flat
    )


def test_the_setting():
    assert BotSettings.from_env({}).unguarded_after_s == 1800
    assert BotSettings.from_env({"MIGRATION_GUARD_BOT_UNGUARDED_AFTER": "0"}).unguarded_after_s == 0
    with pytest.raises(ConfigError, match="MIGRATION_GUARD_BOT_UNGUARDED_AFTER='soon' is not a number"):
        BotSettings.from_env({"MIGRATION_GUARD_BOT_UNGUARDED_AFTER": "soon"})
    assert poll_interval(1800) == 300 and poll_interval(60) == 20
