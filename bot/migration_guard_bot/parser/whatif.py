"""What-if questions: ``what if we add an EPYC 9654 node?``, ``what if we retire pve-atom1?``,
``what if we replace pve-atom1 with a Xeon Gold 6230?``. ``what_if`` answers ``None`` when the text
is not such a question (the grammar then tries the next), else the intent or a ``Help``.

A CPU is whatever the words between the verb and ``node``/``host``/``server`` (or the end) say:
the service knows the shipped CPUs and answers a wrong name with the close ones."""

from __future__ import annotations

import re

from migration_guard_bot.parser.intents import Help, Intent, WhatIf
from migration_guard_bot.parser.tokens import clean, node_ref, not_understood

_ADD_VERBS = r"add|adding|added|buy|buying|bought|get(?!\s+rid)|getting(?!\s+rid)|install|installing"
_REMOVE_VERBS = (
    r"retire|retiring|retired|remove|removing|removed|decommission|decommissioning|decommissioned"
    r"|drop|dropping|sell|selling|get\s+rid\s+of|getting\s+rid\s+of"
)
#: "what if", "what happens if", "what would happen if", "imagine", "suppose", "simulate"
_ASKS = re.compile(r"(?i)\b(?:what\s+(?:would\s+)?(?:happens?\s+)?if|imagine|suppose|simulate)\b")
_ARTICLE = r"(?:(?:an?|one|another|a\s+new|new|the|more)\s+)?"
_COUNT = r"(?:(?P<count>[2-9]|1[0-6]|two|three|four|five|six|seven|eight|nine|ten)\s+(?:(?:more|new)\s+)?)?"
_COUNTS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_NODE_WORD = r"(?:node|host|server|box|machine)s?"
_ADD = re.compile(
    rf"(?i)\b(?:{_ADD_VERBS})\s+{_ARTICLE}{_COUNT}(?P<cpu>[A-Za-z][\w.\- ]*?)"
    rf"\s*(?:\b{_NODE_WORD}\b|$|[?!,;]|\s+and\b)"
)
_REMOVE = re.compile(
    rf"(?i)\b(?:{_REMOVE_VERBS})\s+(?:{_ARTICLE}{_NODE_WORD}\s+)?(?P<node>[^\s?!,;]+)"
    r"(?P<more>(?:\s*(?:,|\band\b)\s*(?!(?:we\s+)?(?:" + _ADD_VERBS + r")\b)[^\s?!,;]+)*)"
)
_MORE = re.compile(r"(?i)\s*(?:,|\band\b)\s*([^\s?!,;]+)")
#: an add or remove verb at the start: "retire pve-atom1" asks the same
_LEADING = re.compile(rf"(?i)^(?:{_ADD_VERBS}|{_REMOVE_VERBS}|replace)\b")
_VERB = re.compile(rf"(?i)\b(?:{_ADD_VERBS}|{_REMOVE_VERBS}|replace)\b")
_NODE_ONLY = re.compile(rf"(?i){_NODE_WORD}")
_PASSIVE = re.compile(
    rf"(?i)\b(?:{_NODE_WORD}\s+)?(?P<node>[^\s?!,;]+)\s+(?:is|was|were|got|gets|goes|went)\s+"
    rf"(?:{_REMOVE_VERBS}|away|gone)\b"
)
_REPLACE = re.compile(
    rf"(?i)\breplac(?:e|es|ed|ing)\s+(?:{_NODE_WORD}\s+)?(?P<node>[^\s?!,;]+)\s+(?:with|by)\s+{_ARTICLE}"
    rf"(?P<cpu>[A-Za-z][\w.\- ]*?)\s*(?:\b{_NODE_WORD}\b|$|[?!,;])"
)
#: the longest CPU name accepted (the shipped ones are 20 characters or less)
CPU_MAX = 60
EXAMPLE = "what if we add an EPYC 9654 node?  or  what if we retire pve-atom1?"


def _removed(said: str) -> list[str]:
    out = []
    for m in _REMOVE.finditer(said):
        out.append(m.group("node"))
        out += _MORE.findall(m.group("more") or "")
    return out + [m.group("node") for m in _PASSIVE.finditer(said)]


def what_if(text: str) -> Intent | None:
    said = clean(text).strip()
    asked = bool(_ASKS.search(said) or _LEADING.search(said))
    replace = _REPLACE.search(said)
    adds = [(m.group("cpu"), m.group("count")) for m in _ADD.finditer(said)]
    removes = _removed(said)
    if replace is not None:
        adds.append((replace.group("cpu"), None))
        removes.append(replace.group("node"))
    if not (adds or removes):
        if asked and _VERB.search(said):
            return Help(f"Which node or CPU? e.g. {EXAMPLE}")
        return None
    if replace is None and not asked:
        return None
    cpus: list[str] = []
    for raw, count in adds:
        cpu = " ".join(raw.split())
        if not cpu or len(cpu) > CPU_MAX or _NODE_ONLY.fullmatch(cpu):
            return Help(f"Which CPU? Name one the service knows, e.g. {EXAMPLE}")
        times = int(count) if count and count.isdigit() else _COUNTS.get((count or "").lower(), 1)
        cpus += [cpu] * times
    nodes: list[str] = []
    for raw in removes:
        ref = node_ref(raw.strip(".\"'`"))
        if ref is None:
            return not_understood(raw)
        if ref[0] is not None:
            return Help("I plan changes of this cluster's nodes: name the node without a cluster.")
        if ref[1] not in nodes:
            nodes.append(ref[1])
    return WhatIf(tuple(cpus), tuple(nodes))
