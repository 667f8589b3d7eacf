"""The parser's vocabulary, and the one-letter typo fixer (``mvoe`` -> ``move``, ``evacuat`` ->
``evacuate``).

A typo is fixed only in a word of letters alone (node and VM names carry digits or dashes and are
never "fixed") of 4 letters or more, that is no word of the vocabulary itself, and that is one edit
(a letter added, dropped, changed, or two neighbours swapped) from exactly one keyword: a trigger
of 5 letters or more, or ``move`` (``life`` is no typo of ``live``).
"""

from __future__ import annotations


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


FILLER = words(
    "a an the please pls plz we i you me us it is are be was were do does did can could may "
    "might would will should shall now ok okay safe safely hey hi hello bot guard there this "
    "that of for and with not cannot cant wont dont doesnt isnt why "
)
VM_WORDS = words("vm vms guest machine virtual qemu kvm id vmid number")
MOVE_WORDS = words(
    "move moved moving go going goes migrate migrated migrating migration live run running runs land go"
)
PREPOSITIONS = ("to", "onto", "into", "on")
NODE_WORDS = words("node host server hypervisor target")
WHERE_WORDS = words("where which what nodes hosts targets anywhere else other")
HELP_WORDS = words("help usage commands command how examples example")
RECOMMEND_TRIGGERS = words("recommend recommendation recommendations recommended baseline")
RECOMMEND_WORDS = (
    words(
        "which what cpu cpus type types model models use using best common pick choose suggest set "
        "cluster nodes node all our give run "
    )
    | RECOMMEND_TRIGGERS
)
DECISION_TRIGGERS = words(
    "blocked block blocks veto vetoes vetoed denied deny denials decisions decision history "
    "stopped refused rejected "
)
DECISION_WORDS = (
    words("why recent recently latest last show list get any today what were was been got ")
    | DECISION_TRIGGERS
    | VM_WORDS
    | MOVE_WORDS
)
#: a whole node: maintenance, evacuation, failure
EVACUATE_TRIGGERS = words(
    "evacuate evacuation evacuating evacuated maintenance maintain drain draining empty emptying "
    "reboot rebooting rebooted"
)
DOWN_TRIGGERS = words("down dies die died fails fail failed failure crashes crash crashed dead lost offline")
EVACUATE_WORDS = (
    EVACUATE_TRIGGERS
    | DOWN_TRIGGERS
    | NODE_WORDS
    | words(
        "put take puts taking mode in into out if when what happens happen happened would will goes go "
        "off all vms everything ok okay check plan preflight pre-flight before whole shut"
    )
)
HA_WORDS = words("ha high-availability availability high")
RISK_TRIGGERS = words("risk risks risky recovery recover recovers problems problem issues issue")
HA_RISK_WORDS = (
    HA_WORDS
    | RISK_TRIGGERS
    | words("any show list which what vms are there current currently all our cluster cannot start")
)
#: "which nodes can run x86-64-v3?"
RUN_WORDS = words("run runs running support supports handle handles take takes start starts accept accepts")
NODES_FOR_WORDS = words("which what nodes node hosts host who where cpu type model") | RUN_WORDS
OVERRIDE_TRIGGERS = words("override overrides overriding exception")
OVERRIDE_WORDS = words("override exception allow let through once one time just pass please") | VM_WORDS
REASON_MARKERS = ("because", "reason", "since", "as")
OVERRIDES_LIST_WORDS = words(
    "list show pending open approved all any requests requested which what are there"
)

#: the words a typo is fixed toward (triggers and question words; long enough to be told apart)
KEYWORDS = frozenset(
    w
    for w in (
        MOVE_WORDS
        | RECOMMEND_TRIGGERS
        | DECISION_TRIGGERS
        | EVACUATE_TRIGGERS
        | DOWN_TRIGGERS
        | RISK_TRIGGERS
        | OVERRIDE_TRIGGERS
        | RUN_WORDS
        | words("where which nodes hosts help happens maintenance because")
    )
    if len(w) >= 5
) | {"move"}
#: every word the parser knows: none of them is ever "fixed"
KNOWN = (
    FILLER
    | VM_WORDS
    | MOVE_WORDS
    | NODE_WORDS
    | WHERE_WORDS
    | HELP_WORDS
    | RECOMMEND_WORDS
    | DECISION_WORDS
    | EVACUATE_WORDS
    | HA_RISK_WORDS
    | NODES_FOR_WORDS
    | OVERRIDE_WORDS
    | OVERRIDES_LIST_WORDS
    | frozenset(PREPOSITIONS)
    | frozenset(REASON_MARKERS)
)


def one_edit(a: str, b: str) -> bool:
    """Is ``a`` one edit from ``b`` (insert, delete, substitute, or swap two neighbours)?"""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        i, j = diff if len(diff) == 2 else (0, 0)
        return len(diff) == 2 and j == i + 1 and a[i] == b[j] and a[j] == b[i]
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1 :]


def fix_typo(word: str) -> str:
    """``word`` (lower case) with a one-letter typo fixed, or unchanged."""
    if len(word) < 4 or not word.isascii() or not word.isalpha() or word in KNOWN:
        return word
    close = [k for k in KEYWORDS if one_edit(word, k)]
    return close[0] if len(close) == 1 else word
