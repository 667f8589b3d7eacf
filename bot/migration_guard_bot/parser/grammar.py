"""``parse(text) -> Intent``: which question is it, then its parts.

The order of the triggers matters and is the whole grammar: an override request (its reason may
say anything), a what-if (a node added or retired), help, HA risks, a whole node (maintenance,
evacuation, failure), which nodes run a CPU type, the CPU type recommendation, the latest
decisions, and last one VM's move.
"""

from __future__ import annotations

from migration_guard_bot.parser import questions
from migration_guard_bot.parser.intents import Check, Decisions, Help, Intent, Recommend, Targets, VmRef
from migration_guard_bot.parser.tokens import (
    is_number,
    lowered,
    node_ref,
    not_understood,
    tokens,
    vm_name,
    vmid,
)
from migration_guard_bot.parser.whatif import what_if
from migration_guard_bot.parser.words import (
    DECISION_TRIGGERS,
    DECISION_WORDS,
    FILLER,
    HELP_WORDS,
    MOVE_WORDS,
    NODE_WORDS,
    PREPOSITIONS,
    RECOMMEND_TRIGGERS,
    RECOMMEND_WORDS,
    VM_WORDS,
    WHERE_WORDS,
)

#: longer questions are refused with a clear line (a slash command allows 4000 characters)
MAX_TEXT = 500


def parse(text: str) -> Intent:
    if len(text) > MAX_TEXT:
        return Help(f"That message is {len(text)} characters long; I read questions of up to {MAX_TEXT}.")
    override = questions.override(text)
    if override is not None:
        return override
    change = what_if(text)  # before the node questions: "what if we retire pve3" is no failure
    if change is not None:
        return change
    toks = tokens(text)
    low = lowered(toks)
    if not toks or any(w in HELP_WORDS for w in low):
        return Help()
    for ask in (questions.evacuate, questions.ha_risks, questions.overrides, questions.nodes_for):
        got = ask(toks, low)
        if got is not None:
            return got
    if any(w in RECOMMEND_TRIGGERS for w in low) or (
        "cpu" in low and any(w in ("type", "types", "model", "models") for w in low)
    ):
        return _recommend(toks, low)
    if any(w in DECISION_TRIGGERS for w in low):
        return _decisions(toks, low)
    if any(is_number(t) for t in toks):
        return _move(toks, low)
    if any(w in VM_WORDS or w in MOVE_WORDS or w == "where" for w in low):
        return _move_by_name(toks, low)
    first_unknown = next(
        (
            t
            for t, w in zip(toks, low, strict=True)
            if w not in FILLER and w not in WHERE_WORDS and w not in NODE_WORDS and w not in PREPOSITIONS
        ),
        None,
    )
    return Help() if first_unknown is None else not_understood(first_unknown)


def _recommend(toks: list[str], low: list[str]) -> Intent:
    nodes: list[str] = []
    for tok, w in zip(toks, low, strict=True):
        if w in RECOMMEND_WORDS or w in FILLER or w in PREPOSITIONS:
            continue
        ref = node_ref(tok)
        if ref is None or ref[0] is not None:
            return not_understood(tok)
        if ref[1] not in nodes:
            nodes.append(ref[1])
    return Recommend(tuple(nodes))


def _decisions(toks: list[str], low: list[str]) -> Intent:
    vm: VmRef | None = None
    for tok, w in zip(toks, low, strict=True):
        if w in DECISION_WORDS or w in FILLER or w in PREPOSITIONS:
            continue
        got: VmRef | Help
        if is_number(tok):
            got = vmid(tok)
        else:
            name = vm_name(tok)
            got = name if name is not None else not_understood(tok)
        if isinstance(got, Help):
            return got
        if vm is not None and vm != got:
            return Help("One VM at a time, please.")
        vm = got
    return Decisions(vm)


def _is_question_word(tok: str, w: str) -> bool:
    return (
        w in FILLER
        or w in VM_WORDS
        or w in MOVE_WORDS
        or w in WHERE_WORDS
        or w in PREPOSITIONS
        or is_number(tok)
    )


def _move(toks: list[str], low: list[str]) -> Intent:
    numbers = [i for i, t in enumerate(toks) if is_number(t)]
    if len({toks[i].lstrip("0") for i in numbers}) > 1:
        return Help("One VM at a time, please.")
    at = numbers[0]
    got = vmid(toks[at])
    if isinstance(got, Help):
        return got
    # words before the VM number: only question words ("can", "where", "vm", ...)
    for tok, w in zip(toks[:at], low[:at], strict=True):
        if not _is_question_word(tok, w):
            return not_understood(tok)
    # a target may follow a preposition ("to node3"), or be bare right after the number in the
    # slash-command form ("101 node3"); any other unknown word is not understood
    slash_form = all(w in VM_WORDS for w in low[:at])
    return _target(got, toks[at + 1 :], low[at + 1 :], expect_target=slash_form)


def _move_by_name(toks: list[str], low: list[str]) -> Intent:
    """``where can web01 go?``, ``can web01 move to node3``: the one unknown word before the
    preposition (or in a where-question) is the VM's name."""
    cut = next((i for i, w in enumerate(low) if w in PREPOSITIONS), len(toks))
    names = [i for i in range(cut) if not _is_question_word(toks[i], low[i]) and low[i] not in NODE_WORDS]
    if not names:
        return Help("Which VM? Give its number or name, e.g. can vm 101 move to node3?")
    if len(names) > 1:
        return not_understood(toks[names[0]] if vm_name(toks[names[0]]) is None else toks[names[1]])
    name = vm_name(toks[names[0]])
    if name is None:
        return not_understood(toks[names[0]])
    return _target(name, toks[names[0] + 1 :], low[names[0] + 1 :], expect_target=False)


def _target(vm: VmRef, toks: list[str], low: list[str], *, expect_target: bool) -> Intent:
    targets: list[tuple[str | None, str]] = []
    for tok, w in zip(toks, low, strict=True):
        if w in PREPOSITIONS:
            expect_target = True
            continue
        if is_number(tok):
            continue
        if w in NODE_WORDS or w in FILLER or w in MOVE_WORDS or w in VM_WORDS or w in WHERE_WORDS:
            continue
        ref = node_ref(tok) if expect_target else None
        if ref is None:
            return not_understood(tok)
        targets.append(ref)
    if not targets:
        return Targets(vm)
    if len(set(targets)) > 1:
        return Help("One target node at a time, please (or ask where the VM can go).")
    cluster, node = targets[0]
    return Check(vm, node, cluster)
