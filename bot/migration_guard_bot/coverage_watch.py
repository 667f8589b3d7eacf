"""Unguarded VMs in the channel: polls the service's coverage (``GET /v1/coverage``) and posts once
when a RUNNING VM has stayed without the guard's hookscript longer than
MIGRATION_GUARD_BOT_UNGUARDED_AFTER (its live migrations are not checked). A VM that gets the hook
(or stops) is forgotten; unguarded again later, it is timed and posted again. The time starts when
the bot first sees the VM unguarded (a restarted bot waits the whole setting again)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from migration_guard.errors import GuardError
from migration_guard_bot import blocks as bk
from migration_guard_bot.messages import code, prose

log = logging.getLogger("migration_guard_bot.coverage")


def poll_interval(after_s: float) -> float:
    """Often enough to post within a third of the setting past it, at most every 5 minutes."""
    return max(10.0, min(300.0, after_s / 3))


class CoverageWatch:
    def __init__(
        self,
        service: Any,
        slack: Any,
        channel: str,
        after_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service, self.slack, self.channel = service, slack, channel
        self.after_s = after_s
        self.clock = clock
        #: (cluster, vmid) -> when first seen unguarded and running
        self.since: dict[tuple[str, int], float] = {}
        self.posted: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._failing = False

    def poll_once(self) -> list[dict]:
        """One look at the coverage; returns the VMs it posted about (empty: nothing new)."""
        body = self.service.coverage()
        now = self.clock()
        cluster = str(body.get("cluster", ""))
        running = {
            (cluster, int(vm["vmid"])): vm
            for vm in body.get("unguarded", [])
            if vm.get("status") == "running"
        }
        for key in list(self.since):
            if key not in running:  # guarded now, stopped, or gone: forget it
                self.since.pop(key)
                self.posted.discard(key)
        due = []
        for key, vm in running.items():
            first = self.since.setdefault(key, now)
            if key not in self.posted and now - first >= self.after_s:
                due.append(vm)
        if due:
            self.slack.chat_postMessage(channel=self.channel, **message(due, self.after_s))
            self.posted.update((cluster, int(vm["vmid"])) for vm in due)
        return due

    def run(self) -> None:
        interval = poll_interval(self.after_s)
        while not self._stop.is_set():
            try:
                self.poll_once()
                if self._failing:
                    log.info("coverage: the service answers again")
                self._failing = False
            except GuardError as exc:  # the service is down: said once, tried again next round
                if not self._failing:
                    log.warning(
                        "coverage: cannot ask the service (%s); trying again every %.0f s", exc, interval
                    )
                self._failing = True
            except Exception:  # a Slack error must not end the watch
                log.exception("coverage: posting to Slack failed; trying again in %.0f s", interval)
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def message(vms: list[dict], after_s: float) -> dict:
    """chat.postMessage arguments: Block Kit plus the plain-text fallback."""
    names = [f"VM {vm['vmid']} {vm.get('name') or ''}".strip() + f" on {vm['node']}" for vm in vms]
    head = (
        f"{len(vms)} running VM(s) without the migration-guard hookscript for over {_duration(after_s)}: "
        "their live migrations are not checked"
    )
    fix = (
        "On a node with the attach timer they get it within 5 minutes; else run "
        "`migration-guard-hook attach` on their node, or tag a VM `migration-guard-skip` "
        "to leave it unguarded."
    )
    fix_m = (
        prose("On a node with the attach timer they get it within 5 minutes; else run ")
        + code("migration-guard-hook attach")
        + prose(" on their node, or tag a VM ")
        + code("migration-guard-skip")
        + prose(" to leave it unguarded.")
    )
    lines = [
        f"{code('VM ' + str(vm['vmid']))} {prose(str(vm.get('name') or ''))} on {code(vm['node'])}"
        for vm in vms
    ]
    blocks = [
        bk.section(f":warning: *{prose(head)}*\n" + bk.bullets(lines, 20)),
        bk.context(fix_m),
    ]
    return {"text": f"{head}: {', '.join(names)}. {fix}", "blocks": blocks}


def home_line(body: dict) -> str:
    """The App Home's coverage line: how many VMs the guard does not protect."""
    unguarded, missing = body.get("unguarded", []), body.get("missing_volume", [])
    text = f"{body.get('guarded', 0)} of {body.get('vms', 0)} VMs guarded"
    text += f"; {len(unguarded)} without the hookscript"
    if unguarded:
        text += (
            " ("
            + ", ".join(f"VM {vm['vmid']}" for vm in unguarded[:8])
            + ("…" if len(unguarded) > 8 else "")
            + ")"
        )
    if missing:
        text += f"; {len(missing)} with the hookscript file missing on a node"
    return prose(text)
