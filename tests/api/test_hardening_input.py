"""Hardening: hostile and malformed input to the service's auth and to the hookscript.

Service: missing, malformed, wrong and timing-probed bearer tokens are 401 JSON errors; the
comparison is hmac.compare_digest against every configured token (no early exit that would tell
which token, or how much of one, matched).

Hookscript (the real file as a subprocess): garbage arguments, a vmid that is not a number, an
unreadable or undecodable config or token file, a token file readable by others. Every case ends
with a defined exit code and at most one clear line, never a traceback, never the token.
"""

from __future__ import annotations

import hmac
import os
import re
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from migration_guard.api.app import create_app
from tests.fakes.service import FakeReader, make_service
from tests.hook.test_hookscript import HOOK, StandIn

TOKENS = ("first-token-aaaaaaaaaaaaaaaa", "second-token-bbbbbbbbbbbbbbb")
CHECK = "/v1/vms/101/check?target=pve2"


@pytest.fixture
def client():
    service = make_service(FakeReader())
    with TestClient(create_app(service, TOKENS), raise_server_exceptions=False) as c:
        yield c


# --- bearer tokens ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "bearer",
        f"Basic {TOKENS[0]}",
        f"Token {TOKENS[0]}",
        "Bearer wrong",
        f"Bearer {TOKENS[0][:-1]}",  # a prefix: the timing probe's first guess
        f"Bearer {TOKENS[0]}x",  # longer
        f"Bearer {TOKENS[0].upper()}",
        f"Bearer {TOKENS[0]},{TOKENS[1]}",  # the setting's own syntax is not a token
        f"Bearer {TOKENS[0][:10]}",
        "Bearer " + "A" * 10_000,
        "Bearer \u00e9t\u00e9",  # non-ASCII
        f"Bearer\t{TOKENS[0]}",  # tab is not the separator
    ],
)
@pytest.mark.parametrize("path", [CHECK, "/v1/cluster", "/v1/matrix", "/v1/decisions?limit=5"])
def test_missing_malformed_and_wrong_tokens_are_401_json(client, header, path):
    headers = {} if header is None else {"Authorization": header.encode("latin-1")}
    answer = client.get(path, headers=headers)
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"] == "Bearer"
    error = answer.json()["error"]
    assert error["code"] == "unauthorized" and "MIGRATION_GUARD_API_TOKENS" in error["message"]
    for token in TOKENS:
        assert token not in answer.text


def test_non_latin1_bytes_in_the_header_are_401_not_500(client):
    answer = client.get(CHECK, headers=[(b"authorization", b"Bearer \xff\xfe\x00\x01")])
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("token", TOKENS)
def test_each_configured_token_is_accepted(client, token):
    answer = client.get(CHECK, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.json()["verdict"] in ("allow", "deny")


def test_scheme_is_case_insensitive_and_surrounding_space_ignored(client):
    answer = client.get(CHECK, headers={"Authorization": f"bearer  {TOKENS[1]} "})
    assert answer.status_code == 200


@pytest.mark.parametrize("given", ["Bearer wrong", f"Bearer {TOKENS[0]}", f"Bearer {TOKENS[1]}"])
def test_tokens_are_compared_with_compare_digest_against_every_token(client, monkeypatch, given):
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    answer = client.get(CHECK, headers={"Authorization": given})
    expected = 401 if given.endswith("wrong") else 200
    assert answer.status_code == expected
    # every configured token compared, also after a match: the time does not tell which one matched
    assert [b for _, b in calls] == [t.encode() for t in TOKENS]
    assert {a for a, _ in calls} == {given.split(" ", 1)[1].encode()}


def test_no_plain_equality_on_tokens_in_the_api_source():
    source = (
        Path(__file__)
        .resolve()
        .parents[2]
        .joinpath("shared", "migration_guard", "api", "deps.py")
        .read_text()
    )
    assert "compare_digest" in source
    assert re.search(r"==\s*token\b|\btoken\s*==|given\w* in token", source) is None


def test_post_with_wrong_token_records_nothing(client):
    before = client.get("/v1/decisions", headers={"Authorization": f"Bearer {TOKENS[0]}"}).json()
    answer = client.post(
        "/v1/decisions",
        json={"vmid": 101, "target": "pve3", "source": "pve1"},
        headers={"Authorization": "Bearer nope", "Accept": "text/plain"},
    )
    assert answer.status_code == 401
    lines = dict(line.split("=", 1) for line in answer.text.splitlines())
    assert (lines["verdict"], lines["exit"], lines["code"]) == ("unknown", "5", "unauthorized")
    after = client.get("/v1/decisions", headers={"Authorization": f"Bearer {TOKENS[0]}"}).json()
    assert after == before


# --- the hookscript ------------------------------------------------------------------------------

HOOK_TOKEN = "hook-s3cr3t-value-never-printed"


@pytest.fixture
def standin():
    s = StandIn()
    yield s
    s.close()


def hook(args: list[str], conf: Path | str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "MIGRATION_GUARD_CONFIG": str(conf),
        "MIGRATION_GUARD_NODE": "pve3",
        "PVE_MIGRATED_FROM": "pve1",
    }
    full.update(env)
    return subprocess.run([str(HOOK), *args], env=full, capture_output=True, text=True, timeout=30)


def conf_file(tmp_path: Path, url: str, fail: str = "open", token: bytes | None = None, mode: int = 0o600):
    token_path = tmp_path / "token"
    token_path.write_bytes(HOOK_TOKEN.encode() + b"\n" if token is None else token)
    token_path.chmod(mode)
    path = tmp_path / "hook.conf"
    path.write_text(f"url = {url}\ntoken_file = {token_path}\nfail = {fail}\ntimeout = 3\n")
    return path


def assert_clean(proc: subprocess.CompletedProcess[str]) -> None:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert HOOK_TOKEN not in out
    assert len(proc.stderr.splitlines()) <= 2, proc.stderr


@pytest.mark.parametrize(
    "args",
    [[], ["101"], ["101", "pre-start", "extra"], ["--bogus"], ["", ""], ["101", ""], ["\n", "pre-start\n"]],
    ids=["none", "one", "three", "flag", "empty", "empty-phase", "newlines"],
)
def test_garbage_arguments_never_ask_and_never_crash(standin, tmp_path, args):
    proc = hook(args, conf_file(tmp_path, standin.url, fail="closed"))
    assert_clean(proc)
    assert standin.requests == []
    if len(args) != 2:
        assert proc.returncode == 64 and proc.stderr.startswith("usage: ")  # not a veto code
    else:
        assert proc.returncode == 0


@pytest.mark.parametrize("vmid", ["abc", "-1", "0x65", "1e3", "101;rm -rf /", "$(reboot)", " 101", "10 1"])
@pytest.mark.parametrize("fail", ["open", "closed"])
def test_vmid_that_is_not_a_number_is_not_sent(standin, tmp_path, vmid, fail):
    proc = hook([vmid, "pre-start"], conf_file(tmp_path, standin.url, fail=fail))
    assert_clean(proc)
    assert standin.requests == []
    assert proc.returncode == 0
    assert "is not a number; not checked" in proc.stderr


@pytest.mark.parametrize(("fail", "code"), [("open", 0), ("closed", 5)])
def test_vmid_out_of_the_service_range_follows_the_fail_policy(tmp_path, fail, code):
    """A number the service refuses (422): no decision -> the fail policy, with the service's reason."""
    s = StandIn()
    try:
        s.answer(422, "verdict=unknown\ncode=bad-input\nexit=5\ndecision=\nline=vmid: out of range\n")
        proc = hook(["99999999999999999999", "pre-start"], conf_file(tmp_path, s.url, fail=fail))
    finally:
        s.close()
    assert_clean(proc)
    assert proc.returncode == code, proc.stderr
    assert "no decision for the migration of VM" in proc.stderr


@pytest.mark.parametrize(("fail", "code"), [("open", 0), ("closed", 5)])
def test_config_that_cannot_be_read_follows_the_fail_policy(standin, tmp_path, fail, code):
    folder = tmp_path / "conf-is-a-folder"
    folder.mkdir()
    proc = hook(["101", "pre-start"], folder, MIGRATION_GUARD_FAIL=fail)
    assert_clean(proc)
    assert proc.returncode == code
    assert f"cannot read config file {folder}" in proc.stderr
    assert standin.requests == []


@pytest.mark.parametrize(("fail", "code"), [("open", 0), ("closed", 5)])
def test_token_file_that_cannot_be_read_follows_the_fail_policy(standin, tmp_path, fail, code):
    path = conf_file(tmp_path, standin.url, fail=fail)
    (tmp_path / "token").unlink()
    (tmp_path / "token").mkdir()
    proc = hook(["101", "pre-start"], path)
    assert_clean(proc)
    assert proc.returncode == code
    assert "cannot read token_file" in proc.stderr
    assert standin.requests == []


def test_config_that_is_not_utf8_follows_the_fail_policy(standin, tmp_path):
    path = conf_file(tmp_path, standin.url, fail="open")
    path.write_bytes(path.read_bytes() + b"\xff\xfe garbage\n")
    proc = hook(["101", "pre-start"], path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "not UTF-8" in proc.stderr and standin.requests == []


def test_token_file_that_is_not_utf8_follows_the_fail_policy(standin, tmp_path):
    proc = hook(["101", "pre-start"], conf_file(tmp_path, standin.url, fail="open", token=b"\xff\xfetok"))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o640, 0o666])
def test_token_file_readable_by_others_warns_and_never_prints_the_token(standin, tmp_path, mode):
    standin.answer(200, "verdict=allow\ncode=ok\nexit=0\ndecision=01X\nline=allowed migration of VM 101\n")
    proc = hook(["101", "pre-start"], conf_file(tmp_path, standin.url, mode=mode))
    assert_clean(proc)
    assert proc.returncode == 0
    assert "readable by other users; run: chmod 600" in proc.stderr
    assert standin.requests and standin.requests[0]["headers"]["Authorization"] == f"Bearer {HOOK_TOKEN}"


def test_token_file_with_mode_600_gives_no_warning(standin, tmp_path):
    standin.answer(200, "verdict=allow\ncode=ok\nexit=0\ndecision=01X\nline=allowed migration of VM 101\n")
    proc = hook(["101", "pre-start"], conf_file(tmp_path, standin.url, mode=0o600))
    assert proc.returncode == 0 and "readable by other users" not in proc.stderr


@pytest.mark.parametrize(
    "line",
    ["url = http://user:pass@127.0.0.1:1", "url = ftp://x", "timeout = -1", "mode = sometimes", "bogus line"],
)
def test_hostile_config_lines_are_a_clear_line_then_the_fail_policy(standin, tmp_path, line):
    path = conf_file(tmp_path, standin.url, fail="closed")
    path.write_text(path.read_text() + line + "\n")
    proc = hook(["101", "pre-start"], path)
    assert_clean(proc)
    if line.startswith("timeout"):  # a bad timeout falls back to 3 s and still asks
        assert "timeout = '-1' is not a number" in proc.stderr
    else:
        assert proc.returncode == 5 and "blocking it (fail = closed)" in proc.stderr
        assert any(w in proc.stderr for w in ("unusable config", "credentials", "must start with http"))
        assert "user:pass" not in proc.stderr  # credentials in a url are never echoed


# --- the Slack parser: every accepted string round-trips --------------------------------------------
# (tests/bot/test_parser.py proves "no crash on any string"; the cpu: parser's round trip is in
# tests/engine/test_engine_properties.py. What was missing: the Slack parser's round trip.)

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from migration_guard_bot.parser import (  # noqa: E402
    Check,
    Decisions,
    Evacuate,
    HaRisks,
    Help,
    NodesFor,
    Override,
    Overrides,
    Recommend,
    Targets,
    parse,
)


def render(intent) -> str:
    """The canonical question for an intent (what the bot's help teaches)."""
    if isinstance(intent, Check):
        where = f"{intent.target_cluster}/{intent.target}" if intent.target_cluster else intent.target
        return f"can vm {intent.vm} move to {where}?"
    if isinstance(intent, Targets):
        return f"where can vm {intent.vm} go?"
    if isinstance(intent, Recommend):
        return "recommend for " + " ".join(intent.nodes) if intent.nodes else "which cpu type should we use?"
    if isinstance(intent, Decisions):
        return f"why was vm {intent.vm} blocked?" if intent.vm else "what was blocked?"
    if isinstance(intent, Evacuate):
        return f"what happens if {intent.node} goes down?" if intent.down else f"evacuate {intent.node}"
    if isinstance(intent, HaRisks):
        return "HA risks"
    if isinstance(intent, NodesFor):
        return f"which nodes can run {intent.cpu}?"
    if isinstance(intent, Overrides):
        return "overrides"
    if isinstance(intent, Override):
        return f"override {intent.vm} to {intent.target} because {intent.reason}"
    raise AssertionError(intent)


WORDS = [
    "can",
    "vm",
    "101",
    "4242",
    "to",
    "node3",
    "pve-2.lab",
    "clusterB/node5",
    "move",
    "go",
    "where",
    "recommend",
    "for",
    "node1",
    "node2",
    "blocked",
    "why",
    "was",
    "what",
    "#101",
    "?",
    "<@U0BOT>",
    "help",
    "migrate",
    "onto",
    "cpu",
    "type",
    "should",
    "we",
    "use",
    "NODE3",
    "a/b",
    "-",
    "web01",
    "evacuate",
    "maintenance",
    "put",
    "in",
    "down",
    "if",
    "HA",
    "risks",
    "which",
    "nodes",
    "run",
    "x86-64-v3",
    "override",
    "overrides",
    "because",
    "mvoe",
    "can't",
]
questions = st.one_of(st.text(max_size=60), st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join))


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(questions)
def test_slack_parser_every_accepted_question_round_trips(text):
    intent = parse(text)
    if isinstance(intent, Help):
        assert "\n" not in intent.problem or intent.problem == ""
        return
    again = parse(render(intent))
    assert again == intent, (text, render(intent), again)
