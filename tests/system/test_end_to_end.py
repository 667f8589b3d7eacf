"""The whole story, every part a separate process: a live migration of a `cpu: host` VM from an AMD
node to an Intel node is vetoed by the real hookscript, the veto reaches Slack through the service,
Redis and the bot, and the same verdict is answered to `/canmove`.

Processes: the Proxmox-shaped HTTPS server (tests/fixtures/e2e_cluster.json: an EPYC 9654 node and
Xeon Gold 6230 / E5-2680 v3 nodes, real CPU data by cpu_ref from shared/migration_guard/data/cpus), the
service
(`migration-guard serve`, proxmoxer over HTTPS, Redis DB 4), the Slack-Web-API-shaped server
(tests/fakes/slack_api_server.py) and the bot (`migration-guard bot --http`). Redis is the real one: the
test session's private Redis (DB 4, flushed at the start). Steps are separate tests sharing the one stack; the
restart test runs last.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.support.e2e import (
    HOOK,
    REPO,
    Proc,
    SlackControl,
    base_env,
    cli_argv,
    free_port,
    http_ok,
    message_text,
    post_signed,
    run_hook,
    slash_command_body,
    wait_until,
)
from tests.support.redis_server import redis_url

pytestmark = pytest.mark.integration

SCENARIO = REPO / "tests" / "fixtures" / "e2e_cluster.json"
REDIS_URL = redis_url(4)
SERVICE_TOKEN = "e2e-service-token"
SIGNING_SECRET = "e2e-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-e2e-test"
CHANNEL = "C0VETOES"
EVENTS = "migration-guard:events"
GROUP = "slack-notifier"

AMD, INTEL1, INTEL2 = "amd1", "intel1", "intel2"
HOST_VM, HOST_VM_NAME = 201, "build01"  # cpu: host, running on amd1
V2_VM, V2_VM_NAME = 202, "web01"  # cpu: x86-64-v2-AES, running on amd1


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.hook_conf = tmp / "hook.conf"
        self.hook_conf.write_text("# end-to-end test: everything else comes from the environment\n")
        self.store = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_timeout=5)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(name, argv, env)
        self.procs.append(proc)
        return proc

    def start_all(self) -> None:
        self.store.flushdb()
        # Proxmox-shaped HTTPS server
        self.pve = self.start(
            "pve",
            [sys.executable, "-m", "migration_guard.demo.pve_server", "--scenario", str(SCENARIO)],
            base_env(),
        )
        ready = self.pve.first_line(20)
        assert ready.startswith("READY https://"), self.pve.output()
        url, ca = ready.split()[1], ready.split("ca=", 1)[1]
        host_port = url.removeprefix("https://")
        token = json.loads(SCENARIO.read_text())["token"]
        # Slack-shaped server
        self.slack_proc = self.start(
            "slack", [sys.executable, str(REPO / "tests" / "fakes" / "slack_api_server.py")], base_env()
        )
        slack_urls = json.loads(self.slack_proc.first_line(20))
        self.slack = SlackControl(slack_urls["base"])
        self.slack_api_url = slack_urls["url"]
        # the service
        port = free_port()
        self.service_url = f"http://127.0.0.1:{port}"
        self.service = self.start(
            "service",
            cli_argv("serve", "--log-level", "warning"),
            base_env(
                MIGRATION_GUARD_PVE_HOST=host_port,
                MIGRATION_GUARD_PVE_USER=token["user"],
                MIGRATION_GUARD_PVE_TOKEN_NAME=token["name"],
                MIGRATION_GUARD_PVE_TOKEN_VALUE=token["value"],
                MIGRATION_GUARD_PVE_VERIFY_SSL=ca,
                MIGRATION_GUARD_PVE_CLUSTER_NAME="lab",
                MIGRATION_GUARD_REDIS_URL=REDIS_URL,
                MIGRATION_GUARD_API_TOKENS=SERVICE_TOKEN,
                MIGRATION_GUARD_LISTEN=f"127.0.0.1:{port}",
            ),
        )
        wait_until(lambda: http_ok(self.service_url + "/healthz"), 30, "the service's /healthz", self.service)
        # the bot
        bot_port = free_port()
        self.bot_events = f"http://127.0.0.1:{bot_port}/slack/events"
        self.bot_env = base_env(
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            MIGRATION_GUARD_SLACK_CHANNEL=CHANNEL,
            MIGRATION_GUARD_SLACK_API_URL=self.slack_api_url,
            MIGRATION_GUARD_URL=self.service_url,
            MIGRATION_GUARD_TOKEN=SERVICE_TOKEN,
            MIGRATION_GUARD_REDIS_URL=REDIS_URL,
            MIGRATION_GUARD_BOT_LISTEN=f"127.0.0.1:{bot_port}",
        )
        self.bot = self.start_bot()

    def start_bot(self) -> Proc:
        bot = self.start("bot", cli_argv("bot", "--http"), self.bot_env)
        healthz = self.bot_events.removesuffix("/slack/events") + "/healthz"
        wait_until(lambda: http_ok(healthz), 30, "the bot's /healthz", bot)
        # the notifier is up once its consumer group exists
        wait_until(lambda: _has_group(self.store), 15, "the bot's consumer group on the event stream", bot)
        return bot

    def hook(self, vmid: int, target: str):
        return run_hook(vmid, AMD, target, self.service_url, SERVICE_TOKEN, self.hook_conf)

    def output(self) -> str:
        return "\n".join(p.output() for p in self.procs)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        try:
            self.store.flushdb()
        finally:
            self.store.close()


def _has_group(store: redis.Redis) -> bool:
    try:
        return any(g["name"] == GROUP for g in store.xinfo_groups(EVENTS))
    except redis.ResponseError:
        return False


def _pending(store: redis.Redis) -> int:
    return int(store.xpending(EVENTS, GROUP)["pending"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    probe = redis.Redis.from_url(REDIS_URL, socket_timeout=1)
    try:
        probe.ping()
    except redis.ConnectionError:
        pytest.skip("no test Redis (is redis-server installed?)")
    finally:
        probe.close()
    if not os.access(HOOK, os.X_OK) or not Path("/usr/bin/python3").is_file():
        pytest.skip("the hookscript cannot run here (its interpreter is /usr/bin/python3)")
    s = Stack(tmp_path_factory.mktemp("e2e"))
    try:
        s.start_all()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def host_veto(stack):
    """The incoming live migration of the `cpu: host` VM from the AMD node to intel1, once."""
    started = time.time()  # wall clock: the Slack-shaped server stamps each call with time.time()
    result = stack.hook(HOST_VM, INTEL1)
    return result, started


def _veto_posts(stack: Stack, vmid: int, target: str) -> list[dict]:
    return [
        c
        for c in stack.slack.ok_calls("chat.postMessage")
        if f"VM {vmid}" in c["params"].get("text", "") and f"to {target}" in c["params"].get("text", "")
    ]


# --- 1. the hookscript vetoes ---------------------------------------------------------------------


def test_1_hook_vetoes_cpu_host_vm_from_amd_to_intel(stack, host_veto):
    result, _ = host_veto
    lines = result.stderr.splitlines()
    detail = (
        f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}\n" + stack.output()
    )
    assert result.returncode == 1, detail
    assert len(lines) == 1, detail
    line = lines[0]
    assert line.startswith(
        f"migration-guard: blocked migration of VM {HOST_VM} ({HOST_VM_NAME}) from {AMD} to {INTEL1}: "
    ), detail
    # the vendor mismatch, named, with the source's vendor and the target's
    assert "CPU vendor mismatch" in line, detail
    assert "AMD" in line and f"{INTEL1} is Intel" in line, detail


# --- 2. the veto reaches Slack --------------------------------------------------------------------


def test_2_veto_is_posted_to_the_channel_within_5_s(stack, host_veto):
    _, started = host_veto
    posts = wait_until(
        lambda: _veto_posts(stack, HOST_VM, INTEL1),
        max(0.5, 5 - (time.time() - started)),
        "the veto's chat.postMessage within 5 s of the hook's start",
        stack.bot,
        stack.output,
    )
    (post,) = posts
    took = post["time"] - started
    print(f"hook start -> veto in Slack: {took:.2f} s")
    assert took < 5, took
    assert post["params"]["channel"] == CHANNEL
    text = post["params"]["text"]
    assert text.startswith(f"Blocked: live migration of VM {HOST_VM} ({HOST_VM_NAME}) to {INTEL1}"), text
    assert f"from {AMD}" in text, text
    assert "AMD" in text and f"{INTEL1} is Intel" in text, text
    blocks = json.dumps(post["params"]["blocks"], ensure_ascii=False)  # the rich message says it too
    for words in (f"VM {HOST_VM}", HOST_VM_NAME, f"`{AMD}`", f"`{INTEL1}`", f"{INTEL1} is Intel"):
        assert words in blocks, (words, blocks)


# --- 3. /canmove gives the same verdict ----------------------------------------------------------


def _ask(stack: Stack, text: str, rid: str) -> dict:
    response_url = f"{stack.slack.base}/response/{rid}"
    answer = post_signed(stack.bot_events, SIGNING_SECRET, slash_command_body(text, response_url))
    assert answer.status_code == 200, (answer.status_code, answer.text, stack.bot.output())

    def reply():
        got = [c for c in stack.slack.calls("response_url") if c["params"].get("_path_id") == rid]
        return got[0] if got else None

    return wait_until(reply, 15, f"the answer to /canmove {text}", stack.bot, stack.output)


def test_3_canmove_to_the_intel_node_gives_the_same_verdict(stack, host_veto):
    reply = _ask(stack, f"{HOST_VM} {INTEL1}", "check")
    text = reply["params"]["text"]
    assert text.startswith(f"NO: VM {HOST_VM} ({HOST_VM_NAME}) cannot move to {INTEL1}"), text
    assert f"from {AMD}" in text and f"{INTEL1} is Intel" in text, text
    assert reply["params"].get("response_type") == "in_channel"
    # the same reason as the hook's line (the service's one sentence)
    hook_line = host_veto[0].stderr.strip()
    reason = hook_line.split(f"to {INTEL1}: ", 1)[-1].split(";")[0]
    assert reason and reason in message_text(reply), (reason, message_text(reply))


def test_3_canmove_without_target_lists_where_the_vms_can_go(stack):
    host = _ask(stack, f"{HOST_VM}", "targets-host")["params"]["text"]
    assert host.startswith(f"VM {HOST_VM} ({HOST_VM_NAME}) on {AMD}: can move to 0 of 2 other nodes."), host
    for node in (INTEL1, INTEL2):
        expected = (
            f"{node}: no (CPU vendor mismatch: cpu host passes the source's AMD CPU through; {node} is Intel"
        )
        assert expected in host, host
    v2 = _ask(stack, f"{V2_VM}", "targets-v2")["params"]["text"]
    assert v2.startswith(f"VM {V2_VM} ({V2_VM_NAME}) on {AMD}: can move to 2 of 2 other nodes."), v2
    for node in (INTEL1, INTEL2):
        assert f"{node}: yes" in v2, v2
    for text in (host, v2):
        assert f". {AMD}: " not in text and f"; {AMD}: " not in text, text  # not its own node


def test_3_canmove_signed_with_another_secret_is_refused(stack):
    rid = "forged"
    body = slash_command_body(f"{HOST_VM} {INTEL1}", f"{stack.slack.base}/response/{rid}")
    answer = post_signed(stack.bot_events, "not-the-signing-secret", body)
    assert answer.status_code == 401, (answer.status_code, answer.text)
    time.sleep(0.5)
    assert [c for c in stack.slack.calls("response_url") if c["params"].get("_path_id") == rid] == []


# --- 4. an allowed migration posts nothing --------------------------------------------------------


def test_4_hook_allows_x86_64_v2_aes_vm_and_posts_nothing(stack, host_veto):
    wait_until(
        lambda: _veto_posts(stack, HOST_VM, INTEL1), 10, "the first veto's post", stack.bot, stack.output
    )
    events_before = stack.store.xlen(EVENTS)
    posts_before = len(stack.slack.calls("chat.postMessage"))
    result = stack.hook(V2_VM, INTEL1)
    detail = f"exit {result.returncode}\nstderr: {result.stderr!r}\n" + stack.output()
    assert result.returncode == 0, detail
    assert "blocked" not in result.stderr and "warning" not in result.stderr, detail
    assert stack.hook(V2_VM, INTEL2).returncode == 0, detail
    time.sleep(2)  # a veto reaches Slack well within this (step 2)
    assert stack.store.xlen(EVENTS) == events_before
    assert stack.slack.calls("chat.postMessage")[posts_before:] == []


# --- 5. the bot dies between reading a veto and posting it ----------------------------------------


def test_5_bot_killed_between_veto_and_post_posts_it_once(stack):
    stack.slack.fail("chat.postMessage", status=500, times=1000)  # Slack is down: the post cannot land
    result = stack.hook(HOST_VM, INTEL2)
    assert result.returncode == 1, result.stderr + stack.output()

    def tried_and_pending():
        tried = [
            c for c in stack.slack.calls("chat.postMessage") if f"to {INTEL2}" in c["params"].get("text", "")
        ]
        return tried and _pending(stack.store) == 1

    wait_until(
        tried_and_pending, 10, "the bot reading the veto and failing to post it", stack.bot, stack.output
    )
    stack.bot.kill()
    assert _veto_posts(stack, HOST_VM, INTEL2) == []
    stack.slack.reset()  # Slack is back (and forgets the failed attempts)
    stack.bot = stack.start_bot()
    wait_until(
        lambda: _veto_posts(stack, HOST_VM, INTEL2),
        15,
        "the veto posted after the restart",
        stack.bot,
        stack.output,
    )
    time.sleep(2)  # would a second copy follow?
    posts = _veto_posts(stack, HOST_VM, INTEL2)
    assert len(posts) == 1, [p["params"]["text"] for p in posts]
    assert posts[0]["params"]["channel"] == CHANNEL
    assert posts[0]["params"]["text"].startswith(
        f"Blocked: live migration of VM {HOST_VM} ({HOST_VM_NAME}) to {INTEL2}"
    )
    assert _pending(stack.store) == 0
    # the earlier veto (intel1) was not posted again by the new bot
    assert _veto_posts(stack, HOST_VM, INTEL1) == []
