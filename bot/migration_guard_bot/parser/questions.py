"""The questions about a whole node, HA and overrides. Each function answers ``None`` when the
text is not its question (the grammar then tries the next), else the intent or a ``Help``."""

from __future__ import annotations

import re

from migration_guard_bot.parser.intents import (
    Evacuate,
    HaRisks,
    Help,
    Intent,
    NodesFor,
    Override,
    Overrides,
    VmRef,
)
from migration_guard_bot.parser.tokens import (
    clean,
    cpu_type,
    is_number,
    lowered,
    node_ref,
    not_understood,
    tokens,
    vm_name,
    vmid,
)
from migration_guard_bot.parser.words import (
    DOWN_TRIGGERS,
    EVACUATE_TRIGGERS,
    EVACUATE_WORDS,
    FILLER,
    HA_RISK_WORDS,
    HA_WORDS,
    MOVE_WORDS,
    NODE_WORDS,
    NODES_FOR_WORDS,
    OVERRIDE_TRIGGERS,
    OVERRIDE_WORDS,
    OVERRIDES_LIST_WORDS,
    PREPOSITIONS,
    RISK_TRIGGERS,
    RUN_WORDS,
    WHERE_WORDS,
)

#: where the reason of an override request starts: "because ...", "reason: ...", "since ...", "as ..."
_REASON = re.compile(r"(?i)(?:^|\s)(?:because|reason\s*:?|since|as)(?=\s|:|$)")
OVERRIDE_EXAMPLE = "override 104 to pve-atom1 because the guest never uses AVX-512"
REASON_MAX = 300


def evacuate(toks: list[str], low: list[str]) -> Intent | None:
    """``can I put pve3 in maintenance?``, ``evacuate pve3``, ``what happens if pve3 goes down?``"""
    maintenance = any(w in EVACUATE_TRIGGERS for w in low)
    down = any(w in DOWN_TRIGGERS for w in low)
    if not (maintenance or down) or any(is_number(t) for t in toks):
        return None
    nodes: list[str] = []
    for tok, w in zip(toks, low, strict=True):
        if w in EVACUATE_WORDS or w in FILLER or w in PREPOSITIONS or w in HA_RISK_WORDS or w in WHERE_WORDS:
            continue
        ref = node_ref(tok)
        if ref is None:
            return not_understood(tok)
        if ref[0] is not None:
            return Help("I plan evacuations of this cluster's nodes: name the node without a cluster.")
        if ref[1] not in nodes:
            nodes.append(ref[1])
    if not nodes:
        return Help("Which node? e.g. can I put pve3 in maintenance?")
    if len(nodes) > 1:
        return Help("One node at a time, please.")
    return Evacuate(nodes[0], down=down and not maintenance)


def ha_risks(toks: list[str], low: list[str]) -> Intent | None:
    """``HA risks``, ``which HA VMs cannot recover?``"""
    if not (any(w in RISK_TRIGGERS for w in low) and (any(w in HA_WORDS for w in low) or "risks" in low)):
        return None
    for tok, w in zip(toks, low, strict=True):
        if w not in HA_RISK_WORDS and w not in FILLER and w not in WHERE_WORDS and w not in NODE_WORDS:
            return not_understood(tok)
    return HaRisks()


def nodes_for(toks: list[str], low: list[str]) -> Intent | None:
    """``which nodes can run x86-64-v3?``: a run word, a nodes word, no VM number, no preposition."""
    if any(is_number(t) for t in toks) or any(w in PREPOSITIONS for w in low):
        return None
    if not any(w in RUN_WORDS for w in low):
        return None
    if not any(w in ("nodes", "node", "hosts", "host", "who", "cpu", "type", "model") for w in low):
        return None
    rest = [t for t, w in zip(toks, low, strict=True) if w not in NODES_FOR_WORDS and w not in FILLER]
    if not rest:
        return Help("Which CPU type? e.g. which nodes can run x86-64-v3?")
    if len(rest) > 1:
        return Help("One CPU type at a time, please.")
    name = cpu_type(rest[0])
    return NodesFor(name) if name is not None else not_understood(rest[0])


def overrides(toks: list[str], low: list[str]) -> Intent | None:
    """``overrides``, ``pending overrides``, ``list override requests``"""
    if not any(w in ("overrides", "override") for w in low) or any(is_number(t) for t in toks):
        return None
    for tok, w in zip(toks, low, strict=True):
        if w not in OVERRIDES_LIST_WORDS and w not in FILLER and w not in ("overrides", "override"):
            return not_understood(tok)
    return Overrides()


def override(text: str) -> Intent | None:
    """``override 104 to pve-atom1 because ...``: None when the text asks no override (a list of
    overrides included)."""
    cleaned = clean(text)
    cut = _REASON.search(cleaned)
    head, reason = (cleaned[: cut.start()], cleaned[cut.end() :]) if cut else (cleaned, "")
    toks = tokens(head)
    low = lowered(toks)
    asked = any(w in OVERRIDE_TRIGGERS and w != "overrides" for w in low) or (
        "let" in low and "through" in low
    )
    names_a_move = any(w in PREPOSITIONS for w in low) or any(map(is_number, toks))
    if not asked or (not reason and not names_a_move):
        return None
    vm: VmRef | None = None
    target: str | None = None
    after_to = False
    for tok, w in zip(toks, low, strict=True):
        if w in PREPOSITIONS:
            after_to = True
            continue
        if w in OVERRIDE_WORDS or w in FILLER or w in MOVE_WORDS or w in NODE_WORDS:
            continue
        if after_to:
            ref = node_ref(tok)
            if ref is None or ref[0] is not None or target is not None:
                return not_understood(tok)
            target = ref[1]
            continue
        got: VmRef | Help = vmid(tok) if is_number(tok) else (vm_name(tok) or not_understood(tok))
        if isinstance(got, Help):
            return got
        if vm is not None:
            return Help("One VM at a time, please.")
        vm = got
    if vm is None or target is None:
        return Help(f"Which VM, and to which node? e.g. {OVERRIDE_EXAMPLE}")
    said = reason.strip(" :-–\t\n")
    if len(said) < 3:
        return Help(f"Say why: the reason is written down with the override, e.g. {OVERRIDE_EXAMPLE}")
    return Override(vm, target, said[:REASON_MAX])
