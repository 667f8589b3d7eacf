"""Interactive buttons: Approve on an override request (its own message, or the veto message of
its VM and target). Bolt verifies the request's signature like every other; the listener acks at
once and asks the service on the answering pool.

The approver is the Slack user who clicked (``slack:<id>``); the service refuses the requester
(and an override expired, spent or rejected) with HTTP 409 and a sentence, which the clicker is
shown; the message then shows the override's real state. An approval edits every message that
shows the override, to say who approved it."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from migration_guard.errors import ConflictError, GuardError
from migration_guard_bot import override_links
from migration_guard_bot.ask.overrides import APPROVE_ACTION, override_message, slack_person
from migration_guard_bot.listeners.deps import Deps

log = logging.getLogger(__name__)


def register(app: App, deps: Deps) -> None:
    @app.action(APPROVE_ACTION)
    def approve(ack: Ack, body: dict, respond: Respond, client: WebClient) -> None:
        ack()  # within Slack's 3 seconds
        user = str((body.get("user") or {}).get("id") or "")
        action = (body.get("actions") or [{}])[0]
        override_id = str(action.get("value") or "")
        on_request = str(action.get("block_id") or "").startswith("override:")

        def approve_later() -> None:
            _approve(deps, client, respond, override_id, user, on_request=on_request)

        deps.later(approve_later, f"the approval of override {override_id[:26]} by {user or '?'}")


def _approve(
    deps: Deps, client: WebClient, respond: Respond, override_id: str, user: str, *, on_request: bool
) -> None:
    if not user:
        respond(
            text="Slack did not say who clicked; nothing was approved.",
            response_type="ephemeral",
            replace_original=False,
        )
        return
    try:
        body = deps.service.approve_override(override_id, slack_person(user))
    except ConflictError as exc:
        # the requester, or an override no longer pending: say why to the clicker only, and show
        # the override's real state to everyone
        respond(text=f"Not approved: {exc}", response_type="ephemeral", replace_original=False)
        current = _current(deps, override_id)
        if current is not None and current.get("status") != "pending":
            _show(deps, client, respond, current, on_request=on_request)
        return
    except GuardError as exc:
        respond(text=f"Not approved: {exc}", response_type="ephemeral", replace_original=False)
        return
    _show(deps, client, respond, body, on_request=on_request)


def _current(deps: Deps, override_id: str) -> dict[str, Any] | None:
    try:
        rows = deps.service.overrides()
    except GuardError:
        return None
    return next((r for r in rows if isinstance(r, dict) and r.get("id") == override_id), None)


def _show(deps: Deps, client: WebClient, respond: Respond, body: dict[str, Any], *, on_request: bool) -> None:
    """Every message showing the override now shows ``body``'s state."""
    if on_request:
        message = override_message(body)
        respond(text=message.text, blocks=message.blocks, replace_original=True)
    if deps.store is not None:
        try:
            override_links.redraw(deps.store, client, body)
        except Exception as exc:  # noqa: BLE001 - Redis down: the clicked message still says it
            log.warning("could not redraw the veto message of override %s: %s", body.get("id"), exc)
