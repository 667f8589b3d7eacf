"""What someone can ask the bot: one frozen dataclass per intent (the parser's only output).

A VM is named by its ID or by its name (``VmRef``): the parser cannot know the names, the answer
resolves a name through the service's answers. Node names are kept as typed; the answer matches
them to the service's nodes in any case.
"""

from __future__ import annotations

from dataclasses import dataclass

#: a VM ID (``101``) or a VM name (``web01``), as asked
VmRef = int | str


@dataclass(frozen=True, slots=True)
class Check:
    """Can VM ``vm`` move to ``target`` (optionally in another cluster)?"""

    vm: VmRef
    target: str
    target_cluster: str | None = None


@dataclass(frozen=True, slots=True)
class Targets:
    """Where can VM ``vm`` go: every other node with its verdict."""

    vm: VmRef


@dataclass(frozen=True, slots=True)
class Recommend:
    """The cluster CPU-type recommendation, optionally for a subset of nodes."""

    nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Decisions:
    """The latest decisions (blocks), optionally of one VM."""

    vm: VmRef | None = None


@dataclass(frozen=True, slots=True)
class Evacuate:
    """Can every VM leave ``node`` (maintenance, evacuation)? ``down``: asked as "what if the node
    fails" (HA restarts its HA VMs elsewhere, the others stay down)."""

    node: str
    down: bool = False


@dataclass(frozen=True, slots=True)
class HaRisks:
    """The HA VMs that HA may recover on a node that cannot run their CPU type."""


@dataclass(frozen=True, slots=True)
class NodesFor:
    """Which nodes can run CPU type ``cpu``?"""

    cpu: str


@dataclass(frozen=True, slots=True)
class Override:
    """Ask for one vetoed migration of ``vm`` to ``target`` to pass, because ``reason``."""

    vm: VmRef
    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class Overrides:
    """The override requests (pending, approved, spent, ...)."""


@dataclass(frozen=True, slots=True)
class WhatIf:
    """What if the cluster gained nodes with these CPUs (``add``: shipped CPU names as typed, e.g.
    ``EPYC 9654``) or lost these nodes (``remove``)?"""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Help:
    """Usage text; ``problem`` says what was not understood (empty for a plain "help")."""

    problem: str = ""


Intent = (
    Check
    | Targets
    | Recommend
    | Decisions
    | Evacuate
    | HaRisks
    | NodesFor
    | Override
    | Overrides
    | WhatIf
    | Help
)
#: every intent class (a property test checks ``parse`` returns one of them)
INTENTS = (
    Check,
    Targets,
    Recommend,
    Decisions,
    Evacuate,
    HaRisks,
    NodesFor,
    Override,
    Overrides,
    WhatIf,
    Help,
)
