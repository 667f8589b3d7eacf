"""The one flag-name normaliser: QEMU feature names, QEMU's aliases and Linux /proc/cpuinfo names.

Every name the project handles is turned into its canonical QEMU spelling by :func:`canonical`
(``sse4_2``/``sse4-2``/``sse4.2`` -> ``sse4.2``, ``sse3`` -> ``pni``, ``tsc_deadline_timer`` ->
``tsc-deadline``). :func:`linux_name` goes back to the name an operator sees in /proc/cpuinfo.
The KVM rules (what the hypervisor supplies, what Linux hides, what KVM never offers) are data in
``data/flag_rules.json``, each with a one-line source; :func:`rules` reads it once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources


@dataclass(frozen=True, slots=True)
class HostNeed:
    """A QEMU feature that the host shows under other flags (or only on one vendor)."""

    feature: str
    flags: tuple[str, ...]  # Linux flags the host must show (all of them)
    vendor: str | None = None  # the rule only holds on this host vendor
    supplied_on: str | None = None  # on this host vendor KVM offers it without any flag
    amd_native_ssbd: bool = False  # on AMD only with native AMD_SSBD (Zen2+)
    source: str = ""


@dataclass(frozen=True, slots=True)
class BugDerived:
    """A feature KVM derives from the host's ``bugs:`` line (an ARCH_CAPABILITIES bit)."""

    feature: str
    absent_bugs: tuple[str, ...]
    flags: tuple[str, ...] = ()
    vendor: str | None = None  # only this host vendor offers it
    undecidable: bool = False  # cpuinfo never tells (no flag, no bug)
    source: str = ""


@dataclass(frozen=True, slots=True)
class HiddenArchCapabilities:
    """The named rule ``kvm-arch-capabilities-behind-qemu-10.1``: on a ``vendor`` node whose QEMU KVM
    view lacks ``when_missing``, KVM still gives each of ``always`` (and each of ``offered_with`` whose
    flags the view has) to a model that forces ``model_vendor``."""

    rule: str = ""
    vendor: str = ""
    when_missing: str = ""
    model_vendor: str = ""
    always: frozenset[str] = frozenset()
    offered_with: tuple[tuple[str, tuple[str, ...]], ...] = ()
    source: str = ""


@dataclass(frozen=True, slots=True)
class FlagRules:
    aliases: dict[str, str]
    linux_names: dict[str, str]
    hypervisor_supplied: frozenset[str]
    host_needs: dict[str, HostNeed]
    bug_derived: dict[str, BugDerived]
    never_offered: frozenset[str]
    vm_flags_allowed: frozenset[str]
    nested_virt: dict[str, str]
    amd_ssbd_min: tuple[tuple[int, int], ...]
    amd_ssbd_fallback: frozenset[str]
    sources: dict[str, str]
    #: guest-visible QEMU features (besides the catalog's): what a host passthrough CPU passes on
    qemu_features: frozenset[str] = frozenset()
    supplied_prefixes: tuple[str, ...] = ()
    not_features: frozenset[str] = frozenset()
    nested_only: frozenset[str] = frozenset()
    nested_only_prefixes: tuple[str, ...] = ()
    hidden_arch_capabilities: HiddenArchCapabilities = HiddenArchCapabilities()
    #: features a migratable ``-cpu host`` never hands the guest (rule ``host-cpu-is-migratable``)
    unmigratable: frozenset[str] = frozenset()
    #: rule name -> its one-line source
    rule_sources: dict[str, str] | None = None

    def is_hypervisor_supplied(self, feature: str) -> bool:
        """Never required from the host (QEMU/KVM supply it whatever the host shows)."""
        if feature in self.hypervisor_supplied or feature in self.not_features:
            return True
        return feature not in self.host_needs and feature.startswith(self.supplied_prefixes)

    def is_nested_only(self, feature: str) -> bool:
        """A vmx/svm sub-feature: judged through vmx/svm itself, never on its own."""
        return feature in self.nested_only or feature.startswith(self.nested_only_prefixes)


def _entries(section: dict) -> dict:
    return {k: v for k, v in section.items() if not k.startswith("_")}


def _host_needs(data: dict) -> dict[str, HostNeed]:
    return {
        name: HostNeed(
            feature=name,
            flags=tuple(entry.get("flags", ())),
            vendor=entry.get("vendor"),
            supplied_on=entry.get("supplied_on"),
            amd_native_ssbd=bool(entry.get("amd_native_ssbd", False)),
            source=entry.get("source", ""),
        )
        for name, entry in _entries(data["host_needs"]).items()
    }


def _bug_derived(data: dict) -> dict[str, BugDerived]:
    return {
        name: BugDerived(
            feature=name,
            absent_bugs=tuple(entry.get("absent_bugs", ())),
            flags=tuple(entry.get("flags", ())),
            vendor=entry.get("vendor"),
            undecidable=bool(entry.get("undecidable", False)),
            source=entry.get("source", ""),
        )
        for name, entry in _entries(data["bug_derived"]).items()
    }


def _hidden_arch_capabilities(section: dict | None) -> HiddenArchCapabilities:
    if not section:
        return HiddenArchCapabilities()
    features = _entries(section.get("features", {}))
    return HiddenArchCapabilities(
        rule=section["rule"],
        vendor=section["vendor"],
        when_missing=section["when_missing"],
        model_vendor=section["model_vendor"],
        always=frozenset(f for f, e in features.items() if e.get("offered") == "always"),
        offered_with=tuple(
            (f, tuple(e["offered_with"])) for f, e in features.items() if e.get("offered_with")
        ),
        source=section.get("source", ""),
    )


def load_rules(text: str) -> FlagRules:
    """Build the rules from the JSON text of ``flag_rules.json``."""
    data = json.loads(text)
    aliases = {name: entry["to"] for name, entry in _entries(data["aliases"]).items()}
    linux = {name: entry["to"] for name, entry in _entries(data["linux_names"]).items()}
    supplied = _entries(data["hypervisor_supplied"])
    needs = _host_needs(data)
    bugs = _bug_derived(data)
    never = _entries(data["never_offered"])
    # the one-line source of each rule about a feature (same order of precedence as before)
    sources: dict[str, str] = dict(supplied)
    sources.update({name: need.source for name, need in needs.items()})
    sources.update({name: derived.source for name, derived in bugs.items()})
    sources.update(never)
    hidden = _hidden_arch_capabilities(data.get("hidden_arch_capabilities"))
    rule_sources: dict[str, str] = {}
    if hidden.rule:
        rule_sources[hidden.rule] = hidden.source
    unmigratable = data.get("passthrough_unmigratable") or {}
    if unmigratable:
        rule_sources[unmigratable["rule"]] = unmigratable.get("source", "")
    ssbd = data["amd_native_ssbd"]
    nested = {k: v for k, v in data["nested_virt"].items() if k in ("intel", "amd")}
    return FlagRules(
        aliases=aliases,
        linux_names=linux,
        hypervisor_supplied=frozenset(supplied),
        host_needs=needs,
        bug_derived=bugs,
        never_offered=frozenset(never),
        vm_flags_allowed=frozenset(data["vm_flags_allowed"]["flags"]),
        nested_virt=nested,
        amd_ssbd_min=tuple((int(a), int(b)) for a, b in ssbd["min_family_model"]),
        amd_ssbd_fallback=frozenset(ssbd["fallback_flags_any"]),
        sources=sources,
        qemu_features=frozenset(data.get("qemu_features_extra", {}).get("features", ())),
        supplied_prefixes=tuple(data.get("hypervisor_supplied_prefixes", {}).get("prefixes", ()))
        + tuple(data.get("qemu_properties_not_features", {}).get("prefixes", ())),
        not_features=frozenset(data.get("qemu_properties_not_features", {}).get("names", ())),
        nested_only=frozenset(data.get("nested_only", {}).get("features", ())),
        nested_only_prefixes=tuple(data.get("nested_only", {}).get("prefixes", ())),
        hidden_arch_capabilities=hidden,
        unmigratable=frozenset(unmigratable.get("features", ())),
        rule_sources=rule_sources,
    )


@cache
def rules() -> FlagRules:
    """The rules of ``shared/migration_guard/data/flag_rules.json`` (read once)."""
    text = resources.files("migration_guard").joinpath("data/flag_rules.json").read_text(encoding="utf-8")
    return load_rules(text)


@lru_cache(maxsize=8192)
def canonical(name: str) -> str:
    """The canonical QEMU spelling of a QEMU name, a QEMU alias or a Linux /proc/cpuinfo name."""
    key = name.strip().lower().replace("_", "-")
    aliases = rules().aliases
    return aliases.get(key, key)


@lru_cache(maxsize=8192)
def linux_name(feature: str) -> str:
    """The /proc/cpuinfo name of a canonical QEMU feature (what an operator sees on the node)."""
    feature = canonical(feature)
    special = rules().linux_names.get(feature)
    if special is not None:
        return special
    return feature.replace("-", "_").replace(".", "_")


def canonical_set(names) -> frozenset[str]:
    return frozenset(canonical(n) for n in names if n and n.strip())


def rule_source(feature: str) -> str | None:
    """The one-line source of the KVM rule about ``feature``, None when no rule names it."""
    return rules().sources.get(canonical(feature))
