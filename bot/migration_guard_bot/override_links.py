"""An override request shown on the veto message of its VM and target, in the bot's Redis.

When someone asks for an override in Slack, the veto message of that VM and target (the
notifier's one message per run, ``notifier.THREAD_KEY``) gets the request and an Approve button.
The override is kept under the run's key (``OVERRIDE_FOR_KEY``: the notifier's later edits of
the count keep showing it) and the message under the override (``OVERRIDE_MESSAGES_KEY``: an
approval edits it). The veto itself is kept by the notifier (``VETO_KEY``) so the message can be
drawn again here.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError

from migration_guard_bot.veto import Veto, veto_message

log = logging.getLogger(__name__)

THREAD_PREFIX = "migration-guard:slack:thread:"
#: the latest veto event of a run (JSON), written by the notifier with the run's message
VETO_KEY = "migration-guard:slack:veto:{key}"
#: the override shown on a run's message (JSON OverrideBody)
OVERRIDE_FOR_KEY = "migration-guard:slack:override-for:{key}"
#: the veto messages showing an override: JSON list of [channel, ts, run key]
OVERRIDE_MESSAGES_KEY = "migration-guard:slack:override:{id}"
#: an override lives a day at most (the service's longest lifetime)
KEEP_S = 86_400


def shown_override(store: redis.Redis, run_key: str) -> dict[str, Any] | None:
    """The override the run's message shows, if any (a damaged record is none)."""
    raw = store.get(OVERRIDE_FOR_KEY.format(key=run_key))
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _run_of(store: redis.Redis, vmid: int, target: str) -> tuple[str, str] | None:
    """(run key, message ts) of the latest veto message of ``vmid`` to ``target``."""
    for key in store.scan_iter(match=f"{THREAD_PREFIX}*:{int(vmid)}:*:{_glob(target)}", count=500):
        k = key.decode() if isinstance(key, bytes) else str(key)
        ts = store.get(k)
        if ts:
            return k[len(THREAD_PREFIX) :], ts.decode() if isinstance(ts, bytes) else str(ts)
    return None


def _glob(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]\\" else c for c in text)


def link(store: redis.Redis, slack: WebClient, channel: str, override: dict[str, Any]) -> bool:
    """Show ``override`` on the veto message of its VM and target; False when there is none."""
    run = _run_of(store, int(override["vmid"]), str(override["target"]))
    if run is None:
        return False
    run_key, ts = run
    pipe = store.pipeline(transaction=True)
    pipe.set(OVERRIDE_FOR_KEY.format(key=run_key), json.dumps(override), ex=KEEP_S)
    pipe.set(OVERRIDE_MESSAGES_KEY.format(id=override["id"]), json.dumps([[channel, ts, run_key]]), ex=KEEP_S)
    pipe.execute()
    return redraw(store, slack, override)


def redraw(store: redis.Redis, slack: WebClient, override: dict[str, Any]) -> bool:
    """Edit every veto message showing ``override`` to show its new state; False when none."""
    raw = store.get(OVERRIDE_MESSAGES_KEY.format(id=override.get("id")))
    try:
        places = json.loads(raw) if raw else []
    except ValueError:
        places = []
    done = False
    for channel, ts, run_key in places:
        store.set(OVERRIDE_FOR_KEY.format(key=run_key), json.dumps(override), ex=KEEP_S)
        event = store.get(VETO_KEY.format(key=run_key))
        try:
            body = json.loads(event) if event else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            continue
        message = veto_message(Veto("", str(body.get("id") or ""), body), override=override)
        try:
            slack.chat_update(channel=channel, ts=ts, text=message.text[:3000], blocks=message.blocks)
            done = True
        except SlackClientError as exc:
            log.warning("could not show override %s on veto message %s: %s", override.get("id"), ts, exc)
    return done
