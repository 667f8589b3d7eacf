"""Plain-words intent parser: what is someone asking the bot?

Pure: ``parse(text) -> Intent``. Case-insensitive; tolerant of punctuation, of "vm"/"VM"/"#"
before the number and of the Slack mention that starts an @mention. Anything it does not
understand becomes ``Help`` with a one-line ``problem`` saying what it tripped on, never an
exception (a property test feeds it arbitrary strings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: longer questions are refused with a clear line (a slash command allows 4000 characters)
MAX_TEXT = 500
VMID_MIN, VMID_MAX = 100, 999_999_999


@dataclass(frozen=True, slots=True)
class Check:
    """Can VM ``vmid`` move to ``target`` (optionally in another cluster)?"""

    vmid: int
    target: str
    target_cluster: str | None = None


@dataclass(frozen=True, slots=True)
class Targets:
    """Where can VM ``vmid`` go: every other node with its verdict."""

    vmid: int


@dataclass(frozen=True, slots=True)
class Recommend:
    """The cluster CPU-type recommendation, optionally for a subset of nodes."""

    nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Decisions:
    """The latest decisions (blocks), optionally of one VM."""

    vmid: int | None = None


@dataclass(frozen=True, slots=True)
class Help:
    """Usage text; ``problem`` says what was not understood (empty for a plain "help")."""

    problem: str = ""


Intent = Check | Targets | Recommend | Decisions | Help

# --- vocabulary ---------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_FILLER = _words(
    "a an the please pls plz we i you me us it is are be was were do does did can could may "
    "might would will should shall now ok okay safe safely hey hi hello bot guard there this "
    "that of for and with "
)
_VM_WORDS = _words("vm vms guest machine virtual qemu kvm id vmid number")
_MOVE_WORDS = _words(
    "move moved moving go going goes migrate migrated migrating migration live run running runs land go "
)
_PREPOSITIONS = ("to", "onto", "into", "on")
_NODE_WORDS = _words("node host server hypervisor target")
_WHERE_WORDS = _words("where which what nodes hosts targets anywhere else other")
_HELP_WORDS = _words("help usage commands command how examples example")
_RECOMMEND_TRIGGERS = _words("recommend recommendation recommendations recommended baseline")
_RECOMMEND_WORDS = (
    _words(
        "which what cpu cpus type types model models use using best common pick choose suggest set "
        "cluster nodes node all our give run "
    )
    | _RECOMMEND_TRIGGERS
)
_DECISION_TRIGGERS = _words(
    "blocked block blocks veto vetoes vetoed denied deny denials decisions decision history "
    "stopped refused rejected "
)
_DECISION_WORDS = (
    _words("why recent recently latest last show list get any today what were was been got ")
    | _DECISION_TRIGGERS
    | _VM_WORDS
    | _MOVE_WORDS
)

_MENTION = re.compile(r"<[@#!][^>]*>")
_SPLIT = re.compile(r"[^\w/.\-#]+", re.UNICODE)
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.\-]{0,62})")
_VM_PREFIXED = re.compile(r"(?i)vm[#\-_]?(\d+)")
_NUMBER = re.compile(r"\d+")
#: Proxmox's pve-vmid format (pve-common PVE/JSONSchema.pm): 100 to 999999999, no leading zero
_VMID = re.compile(r"[1-9][0-9]{2,8}")


def _tokens(text: str) -> list[str]:
    text = _MENTION.sub(" ", text)
    out: list[str] = []
    for raw in _SPLIT.split(text):
        tok = raw.strip(".-#")
        if not tok:
            continue
        m = _VM_PREFIXED.fullmatch(tok)
        if m:
            out.extend(("vm", m.group(1)))
        elif tok.startswith("#") or "#" in tok:
            out.extend(t for t in tok.split("#") if t)
        else:
            out.append(tok)
    return out


def _is_number(tok: str) -> bool:
    return bool(_NUMBER.fullmatch(tok)) and tok.isascii()


def _node_ref(tok: str) -> tuple[str | None, str] | None:
    """``node3`` -> (None, "node3"); ``clusterB/node5`` -> ("clusterB", "node5"); else None."""
    parts = tok.split("/")
    if len(parts) > 2 or not all(_NAME.fullmatch(p) and p.isascii() for p in parts):
        return None
    if _is_number(parts[-1]):
        return None
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def _vmid(tok: str) -> int | Help:
    if not _VMID.fullmatch(tok) or not VMID_MIN <= int(tok) <= VMID_MAX:
        return Help(f"{tok} is not a VM ID (Proxmox VM IDs run from {VMID_MIN} to {VMID_MAX}).")
    return int(tok)


def _not_understood(tok: str) -> Help:
    shown = tok if len(tok) <= 40 else tok[:40] + "…"
    return Help(f'I did not understand "{shown}".')


def parse(text: str) -> Intent:
    if len(text) > MAX_TEXT:
        return Help(f"That message is {len(text)} characters long; I read questions of up to {MAX_TEXT}.")
    tokens = _tokens(text)
    low = [t.lower() for t in tokens]
    if not tokens or any(w in _HELP_WORDS for w in low):
        return Help()
    if any(w in _RECOMMEND_TRIGGERS for w in low) or (
        "cpu" in low and any(w in ("type", "types", "model", "models") for w in low)
    ):
        return _recommend(tokens, low)
    if any(w in _DECISION_TRIGGERS for w in low):
        return _decisions(tokens, low)
    if any(_is_number(t) for t in tokens):
        return _move(tokens, low)
    if any(w in _VM_WORDS or w in _MOVE_WORDS for w in low):
        return Help("Which VM? Give its number, e.g. can vm 101 move to node3?")
    first_unknown = next(
        (
            t
            for t, w in zip(tokens, low, strict=True)
            if w not in _FILLER and w not in _WHERE_WORDS and w not in _NODE_WORDS and w not in _PREPOSITIONS
        ),
        None,
    )
    return Help() if first_unknown is None else _not_understood(first_unknown)


def _recommend(tokens: list[str], low: list[str]) -> Intent:
    nodes: list[str] = []
    for tok, w in zip(tokens, low, strict=True):
        if w in _RECOMMEND_WORDS or w in _FILLER or w in _PREPOSITIONS:
            continue
        ref = _node_ref(tok)
        if ref is None or ref[0] is not None:
            return _not_understood(tok)
        if ref[1] not in nodes:
            nodes.append(ref[1])
    return Recommend(tuple(nodes))


def _decisions(tokens: list[str], low: list[str]) -> Intent:
    vmid: int | None = None
    for tok, w in zip(tokens, low, strict=True):
        if w in _DECISION_WORDS or w in _FILLER or w in _PREPOSITIONS:
            continue
        if _is_number(tok):
            got = _vmid(tok)
            if isinstance(got, Help):
                return got
            if vmid is not None and vmid != got:
                return Help("One VM at a time, please.")
            vmid = got
            continue
        return _not_understood(tok)
    return Decisions(vmid)


def _move(tokens: list[str], low: list[str]) -> Intent:
    numbers = [i for i, t in enumerate(tokens) if _is_number(t)]
    if len({tokens[i].lstrip("0") for i in numbers}) > 1:
        return Help("One VM at a time, please.")
    at = numbers[0]
    got = _vmid(tokens[at])
    if isinstance(got, Help):
        return got
    vmid = got
    # words before the VM number: only question words ("can", "where", "vm", ...)
    for tok, w in zip(tokens[:at], low[:at], strict=True):
        if not (
            w in _FILLER
            or w in _VM_WORDS
            or w in _MOVE_WORDS
            or w in _WHERE_WORDS
            or w in _PREPOSITIONS
            or _is_number(tok)
        ):
            return _not_understood(tok)
    targets: list[tuple[str | None, str]] = []
    after = list(zip(tokens[at + 1 :], low[at + 1 :], strict=True))
    # a target may follow a preposition ("to node3"), or be bare right after the number in the
    # slash-command form ("101 node3"); any other unknown word is not understood
    slash_form = all(w in _VM_WORDS for w in low[:at])
    expect_target = slash_form
    for tok, w in after:
        if w in _PREPOSITIONS:
            expect_target = True
            continue
        if _is_number(tok):
            continue
        if w in _NODE_WORDS or w in _FILLER or w in _MOVE_WORDS or w in _VM_WORDS or w in _WHERE_WORDS:
            continue
        ref = _node_ref(tok) if expect_target else None
        if ref is None:
            return _not_understood(tok)
        targets.append(ref)
    if not targets:
        return Targets(vmid)
    if len(set(targets)) > 1:
        return Help("One target node at a time, please (or ask where the VM can go).")
    cluster, node = targets[0]
    return Check(vmid, node, cluster)
