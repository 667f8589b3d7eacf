"""Hardening: secrets never reach a log, an answer, or stderr.

- The service as its production process (``migration-guard serve --log-level debug``, the most
  talkative setting) with a Proxmox token secret, API tokens and Slack tokens in its environment:
  good and bad requests, a Proxmox that refuses the token and one that fails; then stdout and
  stderr are searched for every secret.
- The same in process with every logger at DEBUG (caplog: proxmoxer, urllib3, uvicorn, ours).
- Start-up errors (a missing setting) name the setting, never a secret's value.
- The Slack bot (HTTP mode, in process) with every logger at DEBUG while it answers a signed
  slash command: the bot token, signing secret and service token are not in the captured log.
"""

from __future__ import annotations

import copy
import json
import logging
import subprocess
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from migration_guard.api.app import create_app
from migration_guard.demo.pve_server import start_server
from migration_guard.service.guard import build_service
from tests.support.e2e import Proc, base_env, cli_argv, free_port, wait_until
from tests.support.service_stack import settings_for

pytestmark = pytest.mark.integration

SCENARIO = json.loads((Path(__file__).parents[1] / "fixtures" / "service" / "scenario.json").read_text())
PVE_SECRET = "9b2f6c1e-5ec2-4e7a-9d7e-5ec2e75ec2e7"
API_TOKENS = ("api-secret-token-one-7f3a", "api-secret-token-two-c41d")
SLACK = {
    "SLACK_BOT_TOKEN": "xoxb-0000-secret-bot-token",
    "SLACK_APP_TOKEN": "xapp-0000-secret-app-token",
    "SLACK_SIGNING_SECRET": "secret-signing-0a1b2c",
}
SECRETS = (PVE_SECRET, *API_TOKENS, *SLACK.values())


@pytest.fixture
def pve():
    sc = copy.deepcopy(SCENARIO)
    sc["token"] = dict(sc["token"], value=PVE_SECRET)
    server = start_server(sc)
    yield server
    server.stop()


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} contains a secret ({secret[:6]}...)"
        assert secret[:12] not in text, f"{where} contains the start of a secret ({secret[:6]}...)"


def exercise(base: str, pve) -> None:
    """Good and bad requests, and the Proxmox faults whose errors name the token."""
    good = {"Authorization": f"Bearer {API_TOKENS[0]}"}
    with httpx.Client(base_url=base, timeout=20) as c:
        assert c.get("/v1/vms/101/check", params={"target": "pve3"}, headers=good).status_code == 200
        assert c.post("/v1/decisions", json={"vmid": 101, "target": "pve3"}, headers=good).status_code == 200
        for wrong in (f"Bearer {API_TOKENS[0]}x", f"Bearer {PVE_SECRET}", f"Basic {API_TOKENS[1]}"):
            assert c.get("/v1/cluster", headers={"Authorization": wrong}).status_code == 401
        assert c.get("/readyz").status_code == 200
        assert c.get("/metrics").status_code == 200
        pve.set_faults(reject_token=True)
        refused = c.get("/v1/vms/102/check", params={"target": "pve2"}, headers=good)
        assert refused.status_code in (200, 502)
        assert_no_secret(refused.text, "the answer while Proxmox refuses the token")
        assert c.get("/readyz").status_code == 503
        pve.set_faults(status=500)
        c.get("/v1/vms/999/check", params={"target": "pve2"}, headers=good)
        c.get("/v1/matrix", headers=good)
        pve.set_faults()


def test_service_process_never_prints_a_secret(pve):
    port = free_port()
    tok = pve.token
    env = base_env(
        MIGRATION_GUARD_PVE_HOST=pve.host_port,
        MIGRATION_GUARD_PVE_USER=tok["user"],
        MIGRATION_GUARD_PVE_TOKEN_NAME=tok["name"],
        MIGRATION_GUARD_PVE_TOKEN_VALUE=PVE_SECRET,
        MIGRATION_GUARD_PVE_VERIFY_SSL=pve.ca_path,
        MIGRATION_GUARD_API_TOKENS=",".join(API_TOKENS),
        MIGRATION_GUARD_PVE_CLUSTER_NAME="lab",
        MIGRATION_GUARD_PVE_TIMEOUT="2",
        MIGRATION_GUARD_LISTEN=f"127.0.0.1:{port}",
        MIGRATION_GUARD_READYZ_CACHE_S="0",
        MIGRATION_GUARD_REDIS_URL="memory://",
        **SLACK,
    )
    proc = Proc("service", cli_argv("serve", "--log-level", "debug"), env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(base), 30, "the service's /healthz", proc)
        exercise(base, pve)
    finally:
        proc.popen.terminate()
        proc.popen.wait(15)
    out, err = proc.stdout(), proc.stderr()
    assert "DEBUG" in err or "INFO" in err, err[-2000:]  # it did log, at the most talkative level
    assert_no_secret(out, "service stdout")
    assert_no_secret(err, "service stderr")
    proc.stop()


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def test_service_in_process_logs_nothing_secret_at_debug(pve, caplog, monkeypatch):
    for key, value in SLACK.items():
        monkeypatch.setenv(key, value)
    caplog.set_level(logging.DEBUG)
    for name in ("", "urllib3", "proxmoxer", "migration_guard", "uvicorn", "httpx", "redis"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    settings = settings_for(
        pve,
        pve_token_value=PVE_SECRET,
        api_tokens=",".join(API_TOKENS),
        pve_cluster_name="lab",
        pve_timeout=2,
    )
    assert_no_secret(repr(settings) + str(settings) + repr(settings.model_dump()), "the settings' repr")
    service = build_service(settings)
    good = {"Authorization": f"Bearer {API_TOKENS[1]}"}
    with TestClient(create_app(service, settings.bearer_tokens()), raise_server_exceptions=False) as c:
        assert c.get("/v1/vms/101/check", params={"target": "pve3"}, headers=good).status_code == 200
        assert c.get("/v1/cluster", headers={"Authorization": f"Bearer {PVE_SECRET}"}).status_code == 401
        pve.set_faults(reject_token=True)
        c.get("/v1/vms/102/check", params={"target": "pve2"}, headers=good)
        pve.set_faults(status=500)
        c.get("/v1/matrix", headers=good)
        pve.set_faults()
    assert caplog.records, "nothing was logged at DEBUG: the test would prove nothing"
    assert_no_secret(caplog.text, "the captured log")
    for record in caplog.records:  # also arguments not yet formatted into the text
        assert_no_secret(repr(record.args) + repr(getattr(record, "exc_text", "")), "a log record's args")


@pytest.mark.parametrize("missing", ["MIGRATION_GUARD_API_TOKENS", "MIGRATION_GUARD_PVE_USER"])
def test_startup_error_names_the_setting_not_a_secret(pve, missing):
    tok = pve.token
    values = {
        "MIGRATION_GUARD_PVE_HOST": pve.host_port,
        "MIGRATION_GUARD_PVE_USER": tok["user"],
        "MIGRATION_GUARD_PVE_TOKEN_NAME": tok["name"],
        "MIGRATION_GUARD_PVE_TOKEN_VALUE": PVE_SECRET,
        "MIGRATION_GUARD_API_TOKENS": ",".join(API_TOKENS),
        "MIGRATION_GUARD_LISTEN": f"127.0.0.1:{free_port()}",
        **SLACK,
    }
    values.pop(missing)
    done = subprocess.run(
        cli_argv("serve", "--log-level", "debug"),
        env=base_env(**values),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert missing in done.stderr and "Traceback" not in done.stderr
    assert_no_secret(done.stdout + done.stderr, "the start-up error")


def test_bad_timeout_setting_error_does_not_echo_the_token(pve):
    values = {
        "MIGRATION_GUARD_PVE_HOST": pve.host_port,
        "MIGRATION_GUARD_PVE_USER": "guard@pve",
        "MIGRATION_GUARD_PVE_TOKEN_NAME": "check",
        "MIGRATION_GUARD_PVE_TOKEN_VALUE": PVE_SECRET,
        "MIGRATION_GUARD_API_TOKENS": ",".join(API_TOKENS),
        "MIGRATION_GUARD_PVE_TIMEOUT": "soon",
    }
    done = subprocess.run(
        cli_argv("serve"), env=base_env(**values), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "MIGRATION_GUARD_PVE_TIMEOUT" in done.stderr
    assert_no_secret(done.stdout + done.stderr, "the settings error")


# --- the Slack bot ---------------------------------------------------------------------------------


def test_bot_logs_no_token_at_debug(caplog):
    from tests.bot import test_http as bh
    from tests.bot.support import TOKEN as SERVICE_TOKEN
    from tests.bot.support import FakeService
    from tests.fakes.slack_api_server import SlackApiServer

    caplog.set_level(logging.DEBUG)
    for name in ("", "slack_bolt", "slack_sdk", "bot", "httpx", "urllib3", "uvicorn"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    with SlackApiServer() as slack, FakeService() as service:
        bot = bh.Bot(slack, service.url)
        try:
            body = bh.slash(slack, "can vm 101 move to node2")
            assert bh.post(bot, body, bh.FORM).status_code == 200
            assert bh.answers(slack)[0]["params"]["text"].startswith("YES")
            assert bh.post(bot, body, bh.FORM, headers={"X-Slack-Signature": "v0=00"}).status_code == 401
        finally:
            bot.stop()
    assert caplog.records
    for secret in ("xoxb-test", bh.SECRET, SERVICE_TOKEN):
        assert secret not in caplog.text, f"the bot's log contains {secret[:6]}..."
