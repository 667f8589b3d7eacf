"""README.md is a contract: every ``migration-guard ...`` command it shows parses with the real CLI,
every setting it names exists, its first command really starts the demo and answers, and its second
command is the CI script that runs the test command the README names.

(``bash .ci/run`` itself is never run from here: it deletes and recreates .venv.)
"""

from __future__ import annotations

import contextlib
import queue
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from migration_guard.cli.main import build_parser
from migration_guard.service.settings import PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
VENV_CLI = ROOT / ".venv" / "bin" / "migration-guard"

FIRST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/migration-guard serve --demo"
)

#: the README's placeholders, replaced by values of the demo cluster before parsing
PLACEHOLDERS = {
    "VMID": "101",
    "TARGET": "pve-xeon-bdw",
    "NODE": "pve-xeon-csl",
    "NAME": "clusterB",
    "FILE": "/tmp/host.cpuinfo",
    "TYPE": "x86-64-v2-AES",
    "TARGET-VMID": "9101",
    "TARGET-ENDPOINT": "host=pve5.example.org,apitoken=PVEAPIToken=root@pam!mig=secret",
    "BRIDGE": "vmbr0",
    "STORAGE": "local-lvm",
    "CLUSTER/NODE": "clusterB/pve5",
    "COMMAND": "serve",
}

#: a setting name; MIGRATION_GUARD_PVE_* (a family) is not one
_SETTING = r"\b(?:MIGRATION_GUARD|SLACK)_[A-Z0-9_]*[A-Z0-9]\b(?!_)"
_ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


# --- reading the README --------------------------------------------------------------------------


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _blocks(text: str) -> tuple[list[tuple[str, list[str]]], str]:
    """(fenced blocks as (language, lines), the prose outside them)."""
    blocks: list[tuple[str, list[str]]] = []
    prose: list[str] = []
    current: tuple[str, list[str]] | None = None
    for line in text.splitlines():
        fence = _FENCE.match(line)
        if fence and current is None:
            current = (fence.group(2), [])
        elif fence and current is not None:
            blocks.append(current)
            current = None
        elif current is not None:
            current[1].append(line.strip())
        else:
            prose.append(line)
    assert current is None, "README.md has an unclosed code fence"
    return blocks, "\n".join(prose)


def _shell_snippets(text: str) -> list[str]:
    """Command text the README shows: lines of ```sh blocks and inline code spans in the prose."""
    blocks, prose = _blocks(text)
    snippets = [line for lang, lines in blocks if lang in ("sh", "bash", "shell") for line in lines]
    snippets += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    return snippets


def _segments(snippet: str) -> list[str]:
    snippet = re.split(r"\s#\s", snippet, maxsplit=1)[0]  # a trailing comment
    return [part.strip() for part in re.split(r"&&|\|\||;|\|", snippet) if part.strip()]


def readme_cli_commands(text: str) -> list[list[str]]:
    """Every ``migration-guard ...`` invocation in README.md, as the argument list after the program."""
    found: list[list[str]] = []
    for snippet in _shell_snippets(text):
        for segment in _segments(snippet):
            try:
                words = shlex.split(segment)
            except ValueError:
                continue
            while words and _ENV_ASSIGNMENT.match(words[0]):
                words = words[1:]
            if words and words[0].rsplit("/", 1)[-1] == "migration-guard" and len(words) > 1:
                found.append(words[1:])
    return found


def _substituted(args: list[str]) -> list[str]:
    return [PLACEHOLDERS.get(a, a) for a in args]


# --- every command parses --------------------------------------------------------------------------


def test_readme_shows_the_main_commands() -> None:
    commands = {" ".join(c[:2]) for c in readme_cli_commands(_readme())}
    for expected in (
        "serve --demo",
        "bot --console",
        "check VMID",
        "matrix",
        "hook install",
        "remote-migrate VMID",
        "cpu check",
    ):
        assert any(c.startswith(expected) for c in commands), (
            f"README.md shows no `migration-guard {expected}`"
        )


@pytest.mark.parametrize("args", readme_cli_commands(_readme()), ids=lambda a: " ".join(a)[:60])
def test_readme_command_parses_with_the_real_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = _substituted(args)
    parser = build_parser()
    if "--help" in argv:
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(argv)
        assert stop.value.code == 0, f"`migration-guard {' '.join(args)}` does not print help"
        return
    try:
        parsed = parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(
            f"README command `migration-guard {' '.join(args)}` is refused by the CLI "
            f"(exit {exc.code}): {capsys.readouterr().err.strip()}"
        )
    assert getattr(parsed, "func", None) is not None, f"`migration-guard {' '.join(args)}` runs nothing"


def test_a_wrong_command_would_be_caught() -> None:
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["serve", "--no-such-option"])
    assert stop.value.code == 2


# --- every setting the README names exists --------------------------------------------------------


def _known_settings() -> set[str]:
    names = {PREFIX + field.upper() for field in Settings.model_fields}
    sources = (
        ROOT / "bot" / "migration_guard_bot" / "settings.py",
        ROOT / "hookscript" / "migration-guard-hook",
        *sorted((ROOT / "hookscript").glob("*.py")),
    )
    for source in sources:
        names |= set(re.findall(_SETTING, source.read_text(encoding="utf-8")))
    return names


def test_every_setting_in_the_readme_exists() -> None:
    named = set(re.findall(_SETTING, _readme()))
    assert "MIGRATION_GUARD_PVE_HOST" in named and "SLACK_BOT_TOKEN" in named
    unknown = sorted(named - _known_settings())
    assert not unknown, f"README.md names settings nothing reads: {', '.join(unknown)}"


# --- the two commands of the first screen ----------------------------------------------------------


def _first_sh_block() -> list[str]:
    blocks, _ = _blocks(_readme())
    return next(lines for lang, lines in blocks if lang == "sh")


def test_first_screen_commands_are_exactly_install_demo_and_ci() -> None:
    lines = [line for line in _first_sh_block() if line]
    assert lines[0] == FIRST_COMMAND
    assert lines[1].split("#", 1)[0].strip() == "bash .ci/run"


def test_ci_runs_the_test_command_the_readme_names() -> None:
    comment = _first_sh_block()[1].split("#", 1)[1]
    named = comment.split("runs:", 1)[1].strip()
    ci_lines = [
        line.strip()
        for line in CI_RUN.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert ci_lines[-1] == named, f".ci/run ends with {ci_lines[-1]!r}, README.md says it runs {named!r}"
    assert "rm -rf .venv" in ci_lines and "redis-server" in CI_RUN.read_text(encoding="utf-8")


# --- the first command's last part works: the demo starts and answers -----------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _curl_request(line: str) -> tuple[str, str, dict[str, str], str | None]:
    """(method, url, headers, body) of one of the banner's curl lines."""
    words = shlex.split(line)
    assert words[0] == "curl"
    headers: dict[str, str] = {}
    body = None
    url = ""
    i = 1
    while i < len(words):
        word = words[i]
        if word == "-H":
            key, _, value = words[i + 1].partition(":")
            headers[key.strip()] = value.strip()
            i += 2
        elif word == "-d":
            body = words[i + 1]
            i += 2
        elif word.startswith("-"):
            i += 1
        else:
            url = word
            i += 1
    return ("POST" if body is not None else "GET"), url, headers, body


class Demo:
    __slots__ = ("port", "token", "banner")

    def __init__(self, port: int, token: str, banner: str) -> None:
        self.port, self.token, self.banner = port, token, banner

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def readme_line(self, line: str) -> str:
        """A README line written for the default port and `<token>`, made to reach this demo."""
        return line.replace("<token>", self.token).replace("127.0.0.1:8080", f"127.0.0.1:{self.port}")


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    """``.venv/bin/migration-guard serve --demo --listen 127.0.0.1:<free port>``, up to its banner."""
    if not VENV_CLI.exists():
        pytest.skip(f"{VENV_CLI} is missing: run the README's first command (or bash .ci/run) first")
    port = _free_port()
    proc = subprocess.Popen(
        [str(VENV_CLI), "serve", "--demo", "--listen", f"127.0.0.1:{port}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for out in proc.stdout:
            lines.put(out)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    banner: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not any("Stop with Ctrl-C" in b for b in banner):
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail("the demo printed no banner within 30 s:\n" + "".join(banner))
            if line is None:
                pytest.fail(f"the demo exited ({proc.wait()}) before its banner:\n" + "".join(banner))
            banner.append(line)
        text = "".join(banner)
        token = re.search(r"API token: (\S+)", text)
        assert token, text
        yield Demo(port, token.group(1), text)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C, as the banner says
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(Exception):
            assert proc.stdout is not None
            proc.stdout.close()


@pytest.mark.integration
def test_demo_from_the_first_command_starts_and_answers_its_banner(demo: Demo) -> None:
    assert f"serving at http://127.0.0.1:{demo.port}" in demo.banner
    assert "nodes pve-epyc1, pve-xeon-bdw, pve-xeon-csl, pve-atom1" in demo.banner
    curls = [b.strip() for b in demo.banner.splitlines() if b.strip().startswith("curl ")]
    assert len(curls) == 3, demo.banner

    method, url, headers, body = _curl_request(curls[0])
    assert (method, url) == ("GET", f"{demo.url}/v1/vms/101/check?target=pve-xeon-bdw")
    answer = httpx.request(method, url, headers=headers, timeout=20)
    assert answer.status_code == 200
    verdict = answer.json()
    assert verdict["verdict"] == "deny"
    assert [r["code"] for r in verdict["reasons"]] == ["vendor-mismatch"]
    assert (verdict["source"], verdict["target"]) == ("pve-epyc1", "pve-xeon-bdw")

    method, url, headers, body = _curl_request(curls[2])  # what the hook sends
    answer = httpx.request(method, url, headers=headers, content=body, timeout=20)
    fields = dict(line.split("=", 1) for line in answer.text.splitlines() if "=" in line)
    assert (fields["verdict"], fields["code"], fields["exit"]) == ("deny", "vendor-mismatch", "1")
    assert fields["line"].startswith("blocked migration of VM 101 (build01) from pve-epyc1 to pve-xeon-bdw")

    wrong = httpx.get(
        f"{demo.url}/v1/vms/101/check?target=pve-xeon-bdw",
        headers={"Authorization": "Bearer not-the-token"},
        timeout=20,
    )
    assert wrong.status_code == 401


def readme_curl_examples(text: str) -> list[tuple[str, str, list[str]]]:
    """(curl line, language of the answer block, answer lines) for each curl example with its answer."""
    blocks, _ = _blocks(text)
    examples = []
    for (lang, lines), (answer_lang, answer) in zip(blocks, blocks[1:], strict=False):
        if lang == "sh" and len(lines) == 1 and lines[0].startswith("curl "):
            examples.append((lines[0], answer_lang, answer))
    return examples


_STRING_FIELD = re.compile(r'"(verdict|code|source|target|name|cpu|model|suggestion|recommended)": "([^"]*)"')


@pytest.mark.integration
def test_readme_curl_examples_get_the_answers_the_readme_shows(demo: Demo) -> None:
    examples = readme_curl_examples(_readme())
    assert len(examples) >= 5, "README.md lost its curl examples"
    for line, lang, shown in examples:
        method, url, headers, body = _curl_request(demo.readme_line(line))
        answer = httpx.request(method, url, headers=headers, content=body, timeout=20)
        assert answer.status_code == 200, f"{line}: HTTP {answer.status_code} {answer.text[:200]}"
        if lang == "json":
            expected: dict[str, set[str]] = {}
            for key, value in _STRING_FIELD.findall(" ".join(shown)):
                expected.setdefault(key, set()).add(value)
            got = answer.json()
            for key, values in expected.items():
                if key == "code" and "cells" in got:  # the compact matrix: its distinct cells
                    actual = {c["code"] for c in got["cells"]}
                elif key == "code":
                    actual = {r["code"] for r in got["reasons"]}
                elif key in got:
                    actual = {str(got[key])}
                else:  # a nested field (the recommendation's VMs): checked below
                    continue
                assert values <= actual, f"{line}: README shows {key} {values}, the demo says {actual}"
            today, _, change = " ".join(shown).partition('"what_if"')
            if "vms_at_risk" in got:
                shown_vms = {int(v) for v in re.findall(r'"vmid": (\d+)', today)}
                assert shown_vms <= {v["vmid"] for v in got["vms_at_risk"]}, line
            if change:  # the what-if block: each VM shown is in the list the README shows it in
                block = got["what_if"]
                for key in ("would_break", "would_gain", "must_move", "blocked_on_added"):
                    part = re.search(
                        rf'"{key}": \[(.*?)\](?=,\s*"(?:would|must|blocked|custom)|\s*,\s*"summary")', change
                    )
                    shown_in = (
                        {int(v) for v in re.findall(r'"vmid": (\d+)', part.group(1))} if part else set()
                    )
                    assert shown_in == {v["vmid"] for v in block[key]}, (line, key)
                assert (
                    re.search(r'"recommended_after": "([^"]+)"', change).group(1)
                    == block["recommended_after"]
                )
            missing = re.search(r'"missing": \[([^\]]*)\]', " ".join(shown))
            if missing and "vmid" in got:
                assert got["missing"] == re.findall(r'"([^"]+)"', missing.group(1)), line
        else:
            fields = dict(x.split("=", 1) for x in answer.text.splitlines() if "=" in x)
            for x in shown:
                key, _, value = x.partition("=")
                if key != "decision":
                    assert fields[key] == value, f"{line}: README shows {x!r}, the demo says {fields[key]!r}"


def readme_console_session(text: str) -> list[tuple[str, list[str]]]:
    """(question, answer lines) from the README's `bot --console` transcript."""
    blocks, _ = _blocks(text)
    transcript = next(lines for lang, lines in blocks if lines and lines[0].startswith("> can vm"))
    session: list[tuple[str, list[str]]] = []
    for line in transcript:
        if line.startswith("> "):
            session.append((line[2:], []))
        elif line and session:
            session[-1][1].append(line)
    return session


@pytest.mark.integration
def test_readme_bot_console_answers_are_what_the_bot_says(demo: Demo) -> None:
    auth = {"Authorization": f"Bearer {demo.token}"}
    for vmid, target in ((101, "pve-xeon-bdw"), (105, "pve-xeon-csl")):  # the README's two vetoes
        posted = httpx.post(f"{demo.url}/v1/decisions", json={"vmid": vmid, "target": target}, headers=auth)
        assert posted.json()["verdict"] == "deny"
    session = readme_console_session(_readme())
    assert [q for q, _ in session][:3] == [
        "can vm 101 move to pve-xeon-csl?",
        "can vm 102 move to pve-atom1?",
        "where can vm 101 go?",
    ]
    env = {"PATH": "/usr/bin:/bin", "MIGRATION_GUARD_URL": demo.url, "MIGRATION_GUARD_TOKEN": demo.token}
    run = subprocess.run(
        [str(VENV_CLI), "bot", "--console"],
        input="".join(q + "\n" for q, _ in session),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    said = {line.strip() for line in run.stdout.splitlines()}
    for question, answer in session:
        for line in answer:
            if "UTC" in line:  # carries the time of the run
                continue
            assert line in said, f"README's answer to {question!r} has {line!r}; the bot said:\n{run.stdout}"
