"""The newer questions' answers: which service call, then which renderer. Errors are mapped by
``migration_guard_bot.answers.answer``, which calls this."""

from __future__ import annotations

from typing import Any

from migration_guard_bot import blocks as bk
from migration_guard_bot.answer_parts import Answer
from migration_guard_bot.ask.evacuation import evacuation_answer
from migration_guard_bot.ask.ha_risks import ha_risks_answer
from migration_guard_bot.ask.nodes_for import nodes_for
from migration_guard_bot.ask.overrides import override_message, overrides_answer
from migration_guard_bot.ask.resolve import vmid_of, with_node
from migration_guard_bot.ask.whatif import ask_what_if
from migration_guard_bot.parser import Evacuate, HaRisks, Intent, NodesFor, Override, Overrides, WhatIf


def answer_more(intent: Intent, service: Any, user: str) -> Answer:
    if isinstance(intent, Evacuate):
        return evacuation_answer(with_node(intent.node, service, service.evacuation), down=intent.down)
    if isinstance(intent, HaRisks):
        return ha_risks_answer(service.ha_risks())
    if isinstance(intent, NodesFor):
        return nodes_for(intent.cpu, service)
    if isinstance(intent, WhatIf):
        return ask_what_if(intent, service)
    if isinstance(intent, Overrides):
        return overrides_answer(service.overrides())
    if isinstance(intent, Override):
        if not user:
            line = "An override needs to know who asks it; ask in Slack or in the console."
            return Answer(text=line, blocks=[bk.section(":warning: " + line)], public=False)
        vmid = vmid_of(intent.vm, service)
        body = with_node(
            intent.target,
            service,
            lambda node: service.request_override(vmid, node, intent.reason, requested_by=user),
        )
        message = override_message(body)
        message.override = body
        return message
    raise TypeError(f"no answer for {type(intent).__name__}")  # a new intent without its answer
