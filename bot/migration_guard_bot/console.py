"""``migration-guard bot --console``: a terminal chat with the same answers as in Slack.

Reads one question per line from stdin, prints the answer as plain text (rendered from the same
Block Kit the Slack listeners send). Ends on EOF, ``quit`` or ``exit``.
"""

from __future__ import annotations

import getpass
import html
import re
from typing import Any, TextIO

from migration_guard_bot.answers import Answer, Service, answer
from migration_guard_bot.parser import parse

_EMOJI = {
    ":white_check_mark:": "✅",
    ":no_entry:": "⛔",
    ":grey_question:": "❔",
    ":warning:": "⚠️",
    ":bulb:": "💡",
    ":mag:": "🔎",
    ":hourglass_flowing_sand:": "⏳",
    ":heavy_check_mark:": "✔️",
    ":clock3:": "🕒",
    ":x:": "❌",
    ":arrows_counterclockwise:": "🔄",
}
_BOLD = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")


def render(reply: Answer) -> str:
    """Block Kit -> terminal text: no mrkdwn markers, entities decoded, emoji as characters."""
    lines: list[str] = []
    for block in reply.blocks:
        texts: list[Any] = []
        if block.get("type") in ("section", "header") and block.get("text"):
            texts.append(block["text"]["text"])
        texts.extend(f["text"].replace("\n", ": ", 1) for f in block.get("fields", []))
        if block.get("type") == "actions":
            texts.append(
                "   ".join(f"[{e['text']['text']}]" for e in block.get("elements", []) if e.get("text"))
            )
        if block.get("type") == "context":
            texts.append("   ".join(e.get("text", "") for e in block.get("elements", [])))
        lines.extend(_plain(t) for t in texts)
    return "\n".join(lines) if lines else html.unescape(reply.text)


def _plain(mrkdwn: str) -> str:
    text = _BOLD.sub(r"\1", mrkdwn).replace("`", "")
    for code, char in _EMOJI.items():
        text = text.replace(code, char)
    return html.unescape(text)


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container): still someone
        return "console"


def run(
    service: Service,
    stdin: TextIO,
    stdout: TextIO,
    *,
    command: str = "/canmove",
    prompt: bool = False,
    user: str = "",
) -> int:
    """``user``: who asks (an override records it); the login name when not given."""
    user = user or _login()
    stdout.write("migration-guard console: ask as you would in Slack (help, quit).\n")
    while True:
        if prompt:
            stdout.write("> ")
        stdout.flush()
        line = stdin.readline()
        if not line:
            return 0
        question = line.strip()
        if question.lower() in ("quit", "exit", "bye"):
            return 0
        if not question:
            continue
        stdout.write(render(answer(parse(question), service, command, user=user)) + "\n\n")
