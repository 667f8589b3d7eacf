"""Plain-words intent parser: what is someone asking the bot?

Pure: ``parse(text) -> Intent``. Case-insensitive; tolerant of punctuation, of "vm"/"VM"/"#"
before the number, of contractions ("can't"), of a one-letter typo in a keyword ("mvoe") and of
the Slack mention that starts an @mention. Anything it does not understand becomes ``Help`` with a
one-line ``problem`` saying what it tripped on, never an exception (a property test feeds it
arbitrary strings).

- ``intents``: the dataclasses it answers (one per question);
- ``words``: the vocabulary and the typo fixer;
- ``tokens``: splitting the text, what a token can be (VM ID, VM name, node, CPU type);
- ``grammar``: ``parse`` and one VM's questions (check, targets, decisions, recommendation);
- ``questions``: a whole node (evacuation), HA risks, which nodes run a type, overrides.
"""

from migration_guard_bot.parser.grammar import MAX_TEXT, parse
from migration_guard_bot.parser.intents import (
    INTENTS,
    Check,
    Decisions,
    Evacuate,
    HaRisks,
    Help,
    Intent,
    NodesFor,
    Override,
    Overrides,
    Recommend,
    Targets,
    VmRef,
    WhatIf,
)
from migration_guard_bot.parser.tokens import VMID_MAX, VMID_MIN

__all__ = [
    "INTENTS",
    "MAX_TEXT",
    "VMID_MAX",
    "VMID_MIN",
    "Check",
    "Decisions",
    "Evacuate",
    "HaRisks",
    "Help",
    "Intent",
    "NodesFor",
    "Override",
    "Overrides",
    "Recommend",
    "Targets",
    "VmRef",
    "WhatIf",
    "parse",
]
