"""The way people ask: a table of phrasings and the intent each must give (parser only, pure).

New questions (evacuation, HA risks, which nodes run a type, overrides), VM names, node names in
any case (kept as typed: the answer matches them to the service's nodes), contractions and
one-letter typos in keywords. Add a row for every new way of asking."""

from __future__ import annotations

import pytest

from migration_guard_bot.parser import (
    Check,
    Decisions,
    Evacuate,
    HaRisks,
    Help,
    NodesFor,
    Override,
    Overrides,
    Recommend,
    Targets,
    WhatIf,
    parse,
)

PHRASINGS = [
    # one VM, one target: "why can't" is a check
    ("why can't 104 go to pve-atom1?", Check(104, "pve-atom1")),
    ("why cant vm 104 go to pve-atom1", Check(104, "pve-atom1")),
    ("why can’t 104 move onto pve-atom1", Check(104, "pve-atom1")),
    ("why won't 104 migrate to pve-atom1?", Check(104, "pve-atom1")),
    ("can 104 go to PVE-ATOM1?", Check(104, "PVE-ATOM1")),
    ("mvoe 101 to pve-xeon-bdw", Check(101, "pve-xeon-bdw")),
    ("can vm 101 migarte to pve-xeon-bdw", Check(101, "pve-xeon-bdw")),
    ("can web01 move to pve-atom1?", Check("web01", "pve-atom1")),
    ("could analytics01 live migrate to pve-epyc1", Check("analytics01", "pve-epyc1")),
    ("why can't db01 go to pve-atom1?", Check("db01", "pve-atom1")),
    # where can it go
    ("where can web01 go?", Targets("web01")),
    ("where can vm web01 run", Targets("web01")),
    ("wheer can 101 go", Targets(101)),
    ("where can legacy-erp go?", Targets("legacy-erp")),
    # a whole node: maintenance, evacuation, failure
    ("can I put pve3 in maintenance?", Evacuate("pve3")),
    ("is it safe to put pve-epyc1 in maintenance", Evacuate("pve-epyc1")),
    ("is it safe to put PVE-EPYC1 into maintenance mode?", Evacuate("PVE-EPYC1")),
    ("evacuate pve-xeon-csl", Evacuate("pve-xeon-csl")),
    ("evacuat pve-xeon-csl", Evacuate("pve-xeon-csl")),
    ("evacaute pve3", Evacuate("pve3")),
    ("drain node pve3", Evacuate("pve3")),
    ("can we reboot pve3?", Evacuate("pve3")),
    ("maintenance pve3", Evacuate("pve3")),
    ("what happens if pve3 goes down?", Evacuate("pve3", down=True)),
    ("what if pve3 dies", Evacuate("pve3", down=True)),
    ("what happens when pve-atom1 fails?", Evacuate("pve-atom1", down=True)),
    ("which HA VMs cannot start if pve3 crashes", Evacuate("pve3", down=True)),
    ("evacuate 101", None),  # a VM, not a node: refused below
    # HA recovery risks
    ("HA risks", HaRisks()),
    ("ha risk", HaRisks()),
    ("show the HA recovery risks", HaRisks()),
    ("are there any HA risks?", HaRisks()),
    ("which HA VMs cannot recover?", HaRisks()),
    ("risks", HaRisks()),
    # which nodes run a CPU type
    ("which nodes can run x86-64-v3?", NodesFor("x86-64-v3")),
    ("what nodes support Skylake-Server-v4", NodesFor("Skylake-Server-v4")),
    ("which hosts can run cpu type EPYC-Rome", NodesFor("EPYC-Rome")),
    ("who can run x86-64-v4?", NodesFor("x86-64-v4")),
    ("which nodes can handle kvm64", NodesFor("kvm64")),
    # overrides
    (
        "override 104 to pve-atom1 because the guest never uses AVX-512",
        Override(104, "pve-atom1", "the guest never uses AVX-512"),
    ),
    ("override vm 104 to pve-atom1 reason: vendor says so", Override(104, "pve-atom1", "vendor says so")),
    ("let 104 through to pve-atom1 once, because it is idle", Override(104, "pve-atom1", "it is idle")),
    ("overide web01 to pve-atom1 because tested", Override("web01", "pve-atom1", "tested")),
    ("overrides", Overrides()),
    ("pending overrides", Overrides()),
    ("list override requests", Overrides()),
    # the older questions, with names and typos
    ("why was web01 blocked?", Decisions("web01")),
    ("recent blcoks", Decisions()),
    ("which cpu type should we use?", Recommend()),
    ("recommend pve-epyc1 PVE-ATOM1", Recommend(("pve-epyc1", "PVE-ATOM1"))),
    # what if: a node added (by its CPU, as the service's GET /v1/cpus names it) or retired
    ("what if we add an EPYC 9654 node?", WhatIf(add=("EPYC 9654",))),
    ("what if we retire pve-atom1?", WhatIf(remove=("pve-atom1",))),
    ("what if we add a Xeon Gold 6230 server", WhatIf(add=("Xeon Gold 6230",))),
    ("what if we buy another Atom C3758", WhatIf(add=("Atom C3758",))),
    ("what would happen if we added two EPYC 9654 nodes?", WhatIf(add=("EPYC 9654", "EPYC 9654"))),
    ("what if pve-atom1 is retired", WhatIf(remove=("pve-atom1",))),
    ("what if we get rid of PVE-ATOM1", WhatIf(remove=("PVE-ATOM1",))),
    ("what if we remove node pve-atom1 and pve-epyc1", WhatIf(remove=("pve-atom1", "pve-epyc1"))),
    ("what if we replace pve-atom1 with an EPYC 9654?", WhatIf(add=("EPYC 9654",), remove=("pve-atom1",))),
    (
        "what happens if we retire pve-atom1 and add a Xeon Gold 6230?",
        WhatIf(add=("Xeon Gold 6230",), remove=("pve-atom1",)),
    ),
    ("retire pve-atom1", WhatIf(remove=("pve-atom1",))),
    ("simulate adding an EPYC 9654", WhatIf(add=("EPYC 9654",))),
]

REFUSED = [
    ("evacuate 101", "I did not understand"),
    ("evacuate pve3 pve4", "One node at a time"),
    ("can I put it in maintenance", "Which node?"),
    ("evacuate clusterB/pve3", "name the node without a cluster"),
    ("override 104 to pve-atom1", "Say why"),
    ("override 104 because reasons", "Which VM, and to which node?"),
    ("override 104 to pve-atom1 because", "Say why"),
    ("which nodes can run", "Which CPU type?"),
    ("which nodes can run x86-64-v3 or x86-64-v4", "One CPU type at a time"),
    ("ha risks for everyone", 'I did not understand "everyone"'),
    ("where can web01 or db01 go", 'I did not understand "or"'),
    ("shutdown node3", 'I did not understand "shutdown"'),
    ("what if we add a node?", "Which CPU?"),
    ("what if we retire", "Which node or CPU?"),
    ("what if we retire clusterB/pve3", "name the node without a cluster"),
]


@pytest.mark.parametrize(
    ("text", "expected"), [p for p in PHRASINGS if p[1] is not None], ids=lambda v: str(v)[:50]
)
def test_phrasing_gives_its_intent(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(("text", "problem"), REFUSED, ids=[t for t, _ in REFUSED])
def test_refused_with_what_tripped(text, problem):
    got = parse(text)
    assert isinstance(got, Help), got
    assert problem in got.problem


def test_table_is_big_enough():
    assert len([p for p in PHRASINGS if p[1] is not None]) >= 40
    kinds = {type(p[1]) for p in PHRASINGS if p[1] is not None}
    assert {Check, Targets, Evacuate, HaRisks, NodesFor, Override, Overrides, Decisions, WhatIf} <= kinds


def test_a_typo_is_never_fixed_in_a_name():
    """Node and VM names carry digits or dashes: ``mvoe1`` stays a name, ``evacuat`` a keyword."""
    assert parse("where can mvoe1 go") == Targets("mvoe1")
    assert parse("can 101 go to evacuat-1") == Check(101, "evacuat-1")
