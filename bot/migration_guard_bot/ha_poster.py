"""Tells the channel about HA recovery risks: polls ``GET /v1/ha/risks`` every
MIGRATION_GUARD_BOT_HA_POLL_S seconds and posts each NEW risk once (an HA VM, and a node HA may
start it on that cannot run its CPU type), and once when it clears.

What was told is kept in the bot's Redis (``RISKS_KEY``: a hash ``vmid:node`` -> the risk as
posted), written after Slack accepted the post: a restarted bot posts nothing it posted before, and
a post Slack refused is tried again at the next poll (never lost; at worst said twice after a crash
between the post and the write). A poll the service cannot answer changes nothing: a risk is
"cleared" only by an answer that no longer lists it.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError

from migration_guard.errors import GuardError
from migration_guard_bot import blocks as bk
from migration_guard_bot.answer_parts import Answer, _vm_label
from migration_guard_bot.ask.ha_risks import risk_line, risk_pairs
from migration_guard_bot.messages import clip, code, plain

log = logging.getLogger(__name__)

RISKS_KEY = "migration-guard:slack:ha-risks"


def _by_vm(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Risk rows of one node each, merged per VM (its nodes together), in VM order."""
    merged: dict[Any, dict[str, Any]] = {}
    for row in rows:
        vm = merged.setdefault(row.get("vmid"), dict(row, nodes=[]))
        vm["nodes"] = vm["nodes"] + list(row.get("nodes") or [])
    return [merged[k] for k in sorted(merged, key=lambda v: int(v) if isinstance(v, int) else 0)]


def new_risks_message(rows: list[dict[str, Any]]) -> Answer:
    vms = _by_vm(rows)
    head = (
        f"New HA recovery risk ({len(vms)} VM{'s' if len(vms) != 1 else ''}): HA may start "
        + ("it" if len(vms) == 1 else "them")
        + " on a node that cannot run its CPU type (recovery runs no hook: the VM would stay down)"
    )
    lines = [risk_line(r) for r in vms]
    return Answer(
        text=plain(head + ": " + "; ".join(t for _, t in lines) + "."),
        blocks=[bk.section(f"*:warning: {head}*\n" + bk.bullets([m for m, _ in lines], 30))],
    )


def cleared_message(rows: list[dict[str, Any]]) -> Answer:
    vms = _by_vm(rows)
    lines = [
        (
            _vm_label(r)["m"] + " on " + ", ".join(code(n.get("node")) for n in r["nodes"]),
            _vm_label(r)["t"] + " on " + ", ".join(str(n.get("node")) for n in r["nodes"]),
        )
        for r in vms
    ]
    head = "HA recovery risk cleared: HA can now start " + ("it" if len(vms) == 1 else "them") + " there"
    return Answer(
        text=plain(head + ": " + "; ".join(t for _, t in lines) + "."),
        blocks=[bk.section(f"*:white_check_mark: {head}*\n" + bk.bullets([m for m, _ in lines], 30))],
    )


class HaRiskPoster:
    def __init__(
        self, store: redis.Redis, slack: WebClient, channel: str, service: Any, interval_s: float = 60.0
    ) -> None:
        self.store = store
        self.slack = slack
        self.channel = channel
        self.service = service
        self.interval_s = interval_s
        self.stop_event = threading.Event()

    def run(self) -> None:
        log.info("posting HA recovery risks to %s every %.0f s", self.channel, self.interval_s)
        while not self.stop_event.is_set():
            try:
                self.poll_once()
            except redis.RedisError as exc:
                log.warning(
                    "Redis is not answering (%s); HA risks are checked again later", type(exc).__name__
                )
            self.stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self.stop_event.set()

    def poll_once(self) -> tuple[int, int] | None:
        """Post the new and the cleared risks; (new, cleared), or None when the service did not answer."""
        try:
            body = self.service.ha_risks()
            current = risk_pairs(body)
        except GuardError as exc:
            log.warning(
                "cannot read the HA risks from the service (%s); nothing changes until it answers", exc
            )
            return None
        except (AttributeError, TypeError, ValueError) as exc:
            log.warning("the service's HA risks answer is not readable (%r); nothing changes", exc)
            return None
        known = {_s(k): _s(v) for k, v in self.store.hgetall(RISKS_KEY).items()}
        new = {k: v for k, v in current.items() if k not in known}
        cleared = {k: _load(v) for k, v in known.items() if k not in current}
        if new and self._post(new_risks_message(list(new.values()))):
            self.store.hset(RISKS_KEY, mapping={k: json.dumps(v) for k, v in new.items()})
        if cleared and self._post(cleared_message(list(cleared.values()))):
            self.store.hdel(RISKS_KEY, *cleared)
        return len(new), len(cleared)

    def _post(self, message: Answer) -> bool:
        try:
            self.slack.chat_postMessage(
                channel=self.channel,
                text=clip(message.text, 3000),
                blocks=message.blocks,
                unfurl_links=False,
                unfurl_media=False,
            )
            return True
        except (SlackClientError, OSError) as exc:
            log.warning("Slack did not take the HA risk message (%s); trying again at the next poll", exc)
            return False


def _load(raw: str) -> dict[str, Any]:
    try:
        row = json.loads(raw)
    except ValueError:
        return {}
    return row if isinstance(row, dict) else {}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
