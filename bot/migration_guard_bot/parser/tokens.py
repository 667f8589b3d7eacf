"""Splitting a question into tokens, and telling what a token can be (a VM ID, a VM name, a node,
a CPU type). Pure; every refusal is a ``Help`` with a one-line ``problem``."""

from __future__ import annotations

import re

from migration_guard_bot.parser.intents import Help
from migration_guard_bot.parser.words import fix_typo

VMID_MIN, VMID_MAX = 100, 999_999_999

_MENTION = re.compile(r"<[@#!][^>]*>")
_SPLIT = re.compile(r"[^\w/.\-#]+", re.UNICODE)
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.\-]{0,62})")
_VM_PREFIXED = re.compile(r"(?i)vm[#\-_]?(\d+)")
_NUMBER = re.compile(r"\d+")
#: Proxmox's pve-vmid format (pve-common PVE/JSONSchema.pm): 100 to 999999999, no leading zero
_VMID = re.compile(r"[1-9][0-9]{2,8}")
#: "can't", "won't", "isn't" -> "can not", ...; curly apostrophes too
_CONTRACTION = re.compile(r"(?i)\b(can|won|is|are|does|do|did|was|were|could|would|should)(?:n['’]t|['’]t)\b")
_NOT = {"won": "will"}
#: a CPU type as Proxmox spells one (``x86-64-v3``, ``Skylake-Server-v4``, ``custom-foo``, ``host``)
_CPU_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}")


def clean(text: str) -> str:
    """The question without Slack mentions, contractions spelled out."""
    text = _MENTION.sub(" ", text)
    return _CONTRACTION.sub(lambda m: _NOT.get(m.group(1).lower(), m.group(1)) + " not", text)


def tokens(text: str) -> list[str]:
    out: list[str] = []
    for raw in _SPLIT.split(clean(text)):
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


def lowered(toks: list[str]) -> list[str]:
    """Each token in lower case, a one-letter typo of a keyword fixed (``mvoe`` -> ``move``)."""
    return [fix_typo(t.lower()) for t in toks]


def is_number(tok: str) -> bool:
    return bool(_NUMBER.fullmatch(tok)) and tok.isascii()


def node_ref(tok: str) -> tuple[str | None, str] | None:
    """``node3`` -> (None, "node3"); ``clusterB/node5`` -> ("clusterB", "node5"); else None."""
    parts = tok.split("/")
    if len(parts) > 2 or not all(_NAME.fullmatch(p) and p.isascii() for p in parts):
        return None
    if is_number(parts[-1]):
        return None
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def vm_name(tok: str) -> str | None:
    """A VM name (Proxmox's dns-name format: letters, digits, ``-``, ``.``), not a number."""
    if "/" in tok or not tok.isascii() or not _NAME.fullmatch(tok) or is_number(tok):
        return None
    return tok


def cpu_type(tok: str) -> str | None:
    return tok if tok.isascii() and _CPU_TYPE.fullmatch(tok) and not is_number(tok) else None


def vmid(tok: str) -> int | Help:
    if not _VMID.fullmatch(tok) or not VMID_MIN <= int(tok) <= VMID_MAX:
        return Help(f"{tok} is not a VM ID (Proxmox VM IDs run from {VMID_MIN} to {VMID_MAX}).")
    return int(tok)


def not_understood(tok: str) -> Help:
    shown = tok if len(tok) <= 40 else tok[:40] + "…"
    return Help(f'I did not understand "{shown}".')
