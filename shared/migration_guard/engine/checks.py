"""A migration verdict for one VM and one target: the engine's CPU verdict plus what the cluster
knows (target offline, machine version, Proxmox's own precondition check, the skip tag).

Pure: facts in, verdict out. The service gathers the facts; the API shapes the body.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from migration_guard.engine import phys_bits, pve_versions
from migration_guard.engine import verdicts as engine
from migration_guard.engine.cpu_spec import CpuSpec, parse_cpu, parse_custom_models
from migration_guard.engine.facts import NodeFacts, Precondition, VmFacts
from migration_guard.engine.hosts import HostCpu
from migration_guard.engine.machines import machine_reasons
from migration_guard.engine.verdicts import Reason
from migration_guard.errors import CpuSpecError, GuardError

SKIP_TAG = "migration-guard-skip"

#: reason codes that make a verdict "deny", with the hookscript exit code each kind maps to
DENY_EXIT = {
    "vendor-mismatch": 1,
    "missing-flags": 2,
    "machine-unsupported": 3,
}
OTHER_DENY_EXIT = 4
NO_DECISION_EXIT = 5

#: codes that deny whatever else holds
DENY_CODES = frozenset(
    {
        "vendor-mismatch",
        "missing-flags",
        "machine-unsupported",
        "target-offline",
        "local-resources",
        "storage-unavailable",
        "cpu-type-unknown-on-target",
        "phys-bits",
    }
)
#: codes that leave the verdict unknown unless something denies
#: (an unknown model is not denied: the guard must never block a good migration by accident)
UNKNOWN_CODES = frozenset(
    {
        "flags-unknown",
        "source-unknown",
        "vendor-unknown",
        "bad-cpu-spec",
        "unknown-model",
        "cluster-unreachable",
        "proxmox-bad-answer",
        "node-unreachable",
    }
)


@dataclass(frozen=True, slots=True)
class Verdict:
    vmid: int
    name: str
    source: str
    target: str
    verdict: str  # allow | deny | unknown
    reasons: tuple[Reason, ...]
    cpu: str
    model: str
    suggestion: str | None
    flag_source: str
    source_cluster: str
    target_cluster: str
    missing: tuple[str, ...] = ()
    #: the cpu a pending change sets ("" = kvm64), None when no cpu change is pending
    pending_cpu: str | None = None
    #: what the operator must know about the facts judged (a nested node), never a verdict reason
    notes: tuple[Reason, ...] = ()

    @property
    def exit_code(self) -> int:
        """The hookscript's exit code for this verdict (0 allow, 1-4 deny kinds, 5 unknown)."""
        if self.verdict == "allow":
            return 0
        if self.verdict == "unknown":
            return NO_DECISION_EXIT
        for reason in self.reasons:
            if reason.code in DENY_CODES:
                return DENY_EXIT.get(reason.code, OTHER_DENY_EXIT)
        return OTHER_DENY_EXIT

    @property
    def deny_code(self) -> str:
        for reason in self.reasons:
            if reason.code in DENY_CODES or (self.verdict == "unknown" and reason.code in UNKNOWN_CODES):
                return reason.code
        return self.reasons[0].code if self.reasons else ""

    def log_line(self) -> str:
        """The one sentence for the Proxmox task log."""
        vm = f"VM {self.vmid}" + (f" ({self.name})" if self.name else "")
        route = f"from {self.source or 'an unknown node'} to {self.target}"
        if self.source_cluster != self.target_cluster:  # cross-cluster: name both clusters
            src = (
                f"{self.source_cluster}/{self.source}"
                if self.source
                else "a cluster the service does not read"
            )
            route = f"from {src} to {self.target_cluster}/{self.target}"
        notes = "".join(f"; note: {n.message}" for n in self.notes)
        if self.verdict == "allow":
            return f"allowed migration of {vm} {route} (cpu {self.cpu}){notes}"
        main = [r.message for r in self.reasons if r.code in DENY_CODES or r.code in UNKNOWN_CODES]
        why = "; ".join(main or [r.message for r in self.reasons]) or "no reason given"
        tail = f"; {self.suggestion}" if self.suggestion else ""
        word = "blocked" if self.verdict == "deny" else "could not judge"
        return f"{word} migration of {vm} {route}: {why}{tail}{notes}"


def nested_note(node: NodeFacts | None) -> Reason | None:
    """A note when ``node`` is itself a virtual machine and judged on its /proc/cpuinfo: its KVM may
    offer far less than its cpuinfo shows (on a nested AMD EPYC node real QEMU refused 36 of 133 CPU
    types its cpuinfo listed). Its KVM view (/cluster/qemu/cpu-flags) is exact and used when given."""
    if node is None or node.flag_source != "cpuinfo":
        return None
    return nested_host_note(node.cpu)


def nested_host_note(cpu: HostCpu | None) -> Reason | None:
    """``nested_note`` for a CPU judged on /proc/cpuinfo flags (a host file of the CLI too)."""
    if cpu is None or cpu.flag_source != "cpuinfo" or "hypervisor" not in cpu.flags:
        return None
    return Reason(
        "nested-node",
        f"{cpu.name} is itself a virtual machine (hypervisor flag in its /proc/cpuinfo): the KVM it "
        "runs may offer far less than its cpuinfo shows, so this verdict may be wrong; Proxmox VE 9.2 "
        "reports its exact KVM view",
    )


@dataclass
class _Draft:
    """A verdict in the making: what the checks have found so far."""

    vm: VmFacts
    source: NodeFacts | None
    target: NodeFacts
    pending_note: Reason | None = None
    reasons: list[Reason] = field(default_factory=list)
    notices: list[Reason] = field(default_factory=list)  # said after the reasons that decide
    notes: list[Reason] = field(default_factory=list)
    suggestion: str | None = None
    model: str = ""
    missing: tuple[str, ...] = ()

    def verdict(self, kind: str, *reasons: Reason) -> Verdict:
        self.reasons.extend(reasons)
        if self.pending_note is not None:
            self.reasons.append(self.pending_note)
        vm, source, target = self.vm, self.source, self.target
        return Verdict(
            vmid=vm.vmid,
            name=vm.name,
            source=source.name if source else vm.node,
            target=target.name,
            verdict=kind,
            reasons=tuple(self.reasons) + tuple(self.notices),
            cpu=vm.cpu or "kvm64",
            model=self.model,
            suggestion=self.suggestion,
            flag_source=target.flag_source,
            source_cluster=source.cluster if source else vm.cluster,
            target_cluster=target.cluster,
            missing=self.missing,
            pending_cpu=vm.pending_cpu,
            notes=tuple(self.notes),
        )


def evaluate(
    vm: VmFacts,
    source: NodeFacts | None,
    target: NodeFacts,
    precondition: Precondition | None = None,
    *,
    source_known: bool = True,
    suggest: bool = True,
) -> Verdict:
    """The verdict for moving ``vm`` (running or not) from ``source`` to ``target``.
    ``source`` None with ``source_known`` False: a cross-cluster source the service does not read.
    ``suggest`` False: a denied CPU check names no type both run (the matrix shows none)."""
    vm, pending_note = _pending_cpu(vm, source, target, precondition, source_known)
    draft = _Draft(vm, source, target, pending_note)
    if SKIP_TAG in vm.tags:
        return draft.verdict("allow", _skip_tag_reason(vm))
    if not target.online:
        offline = Reason("target-offline", f"{target.name} is offline: start it or pick another node")
        return draft.verdict("deny", offline)
    try:
        spec: CpuSpec = vm_spec(vm)
        engine.requirement(spec)  # resolves the model: an unknown one raises here
    except CpuSpecError as exc:
        return draft.verdict("unknown", Reason(exc.code, f"the VM's cpu value cannot be judged: {exc}"))
    # which Proxmox each node runs: the names it accepts, and the direction of the move
    names = pve_versions.Namer([n for n in (source, target) if n is not None])
    draft.notices.extend(_release_notices(source, target))
    type_reason, draft.suggestion = _type_on_target(vm, spec, source, target, names)
    if type_reason is not None:
        draft.model = engine.requirement(spec).model
        return draft.verdict("deny", type_reason)
    no_flags = _flags_unknown(vm, spec, source, target)
    if no_flags is not None:
        return draft.verdict("unknown", no_flags)
    draft.notes.extend(_nested_notes(vm, spec, source, target, source_known))
    kind = _cpu_check(draft, spec, names, source_known, suggest)
    # a guest wider (physical address bits) than the target can crash after the move
    source_cpu = source.cpu if source is not None else None
    widths = (
        phys_bits.reasons(spec, source_cpu, target.cpu, running=vm.status == "running")
        if target.cpu is not None
        else []
    )
    draft.reasons.extend(widths)
    if any(r.code == phys_bits.CODE for r in widths):
        kind = "deny"
    # the machine the VM runs (version and +pveN revision) must exist on the target
    draft.reasons.extend(machine := machine_reasons(vm, target))
    if any(r.code == "machine-unsupported" for r in machine):
        kind = "deny"
    if precondition is not None:
        found = _precondition_reasons(vm, target, precondition, denied=kind == "deny")
        draft.reasons.extend(found)
        if any(r.code in DENY_CODES for r in found):
            kind = "deny"
    return draft.verdict(kind)


def vm_spec(vm: VmFacts) -> CpuSpec:
    """The VM's parsed cpu value; a ``custom-NAME`` type resolved with the cluster's custom models
    read with the VM (``custom_conf``; None: not read, so such a type cannot be judged). Raises
    CpuSpecError."""
    custom = parse_custom_models(vm.custom_conf) if vm.custom_conf is not None else None
    return parse_cpu(vm.cpu or None, custom)


def _pending_cpu(
    vm: VmFacts,
    source: NodeFacts | None,
    target: NodeFacts,
    precondition: Precondition | None,
    source_known: bool,
) -> tuple[VmFacts, Reason | None]:
    """The VM as judged (a stopped VM's next start applies its pending cpu first) and the note
    about a pending cpu change, if any."""
    if vm.pending_cpu is None or vm.pending_cpu == vm.cpu:
        return vm, None
    later = vm.pending_cpu or "kvm64"
    if vm.status != "running":
        # a stopped VM's start applies its pending changes first: judge the cpu it will run
        note = Reason(
            "pending-cpu",
            f"cpu {later} is pending for VM {vm.vmid}: its next start applies it, so it is "
            f"judged with cpu {later} (current config: {vm.cpu or 'kvm64'})",
        )
        return replace(vm, cpu=vm.pending_cpu), note
    # a live migration starts the target with the CURRENT cpu (qemu-server applies
    # pending changes at a start only without a migration state, vm_start_nolock)
    after = evaluate(
        replace(vm, cpu=vm.pending_cpu, pending_cpu=None),
        source,
        target,
        precondition,
        source_known=source_known,
    )
    why = [r.message for r in after.reasons if r.code in DENY_CODES or r.code in UNKNOWN_CODES]
    note = Reason(
        "pending-cpu",
        f"cpu {later} is pending for VM {vm.vmid}: it applies at the VM's next reboot (a full "
        f"stop and start); this live migration keeps cpu {vm.cpu or 'kvm64'}. After that reboot "
        f"the verdict for {target.name} would be {after.verdict}"
        + (f": {'; '.join(why)}" if after.verdict != "allow" and why else ""),
    )
    return vm, note


def _skip_tag_reason(vm: VmFacts) -> Reason:
    return Reason("bypassed", f"VM {vm.vmid} is tagged {SKIP_TAG}: the guard lets it through unchecked")


def _flags_unknown(vm: VmFacts, spec: CpuSpec, source: NodeFacts | None, target: NodeFacts) -> Reason | None:
    """Why a node's CPU cannot be judged: the target's flags, or a passed-through source's, are missing."""
    if target.cpu is None:
        node: NodeFacts = target
    elif source is not None and source.cpu is None and spec.is_passthrough and vm.status == "running":
        node = source
    else:
        return None
    return Reason("flags-unknown", f"Proxmox gave no CPU flags for {node.name}, so its CPU cannot be judged")


def _nested_notes(
    vm: VmFacts, spec: CpuSpec, source: NodeFacts | None, target: NodeFacts, source_known: bool
) -> list[Reason]:
    """Nested nodes judged on their cpuinfo: the target always, the source when its CPU is passed through."""
    passed = spec.is_passthrough and vm.status == "running" and source_known
    found = (nested_note(node) for node in (source if passed else None, target))
    return [note for note in found if note is not None]


def _cpu_check(
    draft: _Draft, spec: CpuSpec, names: pve_versions.Namer, source_known: bool, suggest: bool = True
) -> str:
    """The engine's CPU verdict, recorded in ``draft``; its kind."""
    source_cpu = draft.source.cpu if draft.source is not None else None
    result = engine.check_migration(
        spec,
        source_cpu if source_known else None,
        draft.target.cpu,  # type: ignore[arg-type]  # _flags_unknown answered a missing one
        running=draft.vm.status == "running",
        names=names,
        suggest=suggest,
    )
    draft.model = result.model
    draft.missing = result.missing
    draft.suggestion = result.suggestion
    draft.reasons.extend(result.reasons)
    return result.verdict


def _precondition_reasons(
    vm: VmFacts, target: NodeFacts, precondition: Precondition, *, denied: bool
) -> list[Reason]:
    """What Proxmox's own precondition check (``migrate_vm_precondition``) found against the move;
    local disks only matter when nothing else denies it."""
    if not precondition.checked:
        skipped = precondition.skipped_reason
        return [Reason("precheck-skipped", skipped)] if skipped else []
    found: list[Reason] = []
    if precondition.local_resources:
        found.append(
            Reason(
                "local-resources",
                f"VM {vm.vmid} uses local resources ({', '.join(precondition.local_resources)}) "
                "that cannot move with it",
            )
        )
    blocked = precondition.unavailable_storages + precondition.unavailable_resources
    if blocked:
        found.append(
            Reason(
                "storage-unavailable",
                f"{target.name} lacks storage or resources the VM needs: {', '.join(blocked)}",
            )
        )
    if precondition.local_disks and not denied and not found:
        found.append(
            Reason(
                "local-disks",
                f"VM {vm.vmid} has local disks ({', '.join(precondition.local_disks)}): "
                "migrate with --with-local-disks",
            )
        )
    return found


def _release_notices(source: NodeFacts | None, target: NodeFacts) -> list[Reason]:
    """A notice when the move goes from a newer to an older Proxmox major release."""
    if source is None or not source.pve_version or not target.pve_version:
        return []
    src, dst = pve_versions.major_of(source.pve_version), pve_versions.major_of(target.pve_version)
    if src is None or dst is None or src <= dst:
        return []
    newer, older = pve_versions.release_of(source.pve_version), pve_versions.release_of(target.pve_version)
    return [
        Reason(
            "pve-downgrade",
            f"{source.name} runs Proxmox VE {newer} and {target.name} runs {older}: Proxmox supports "
            f"live migration only from older to newer releases; upgrade {target.name} first or move "
            f"the VM toward a node on {newer}",
        )
    ]


def _type_on_target(
    vm: VmFacts, spec: CpuSpec, source: NodeFacts | None, target: NodeFacts, names: pve_versions.Namer
) -> tuple[Reason | None, str | None]:
    """A deny reason (and the fix) when the target's Proxmox does not define the VM's cpu type:
    qemu-server's ``validate_vm_cpu_conf`` dies "Built-in cputype '...' is not defined" there."""
    accepts = pve_versions.accepts_of(target)
    if spec.cputype.startswith("custom-") or accepts.accepts(spec.cputype) is not False:
        # custom models live in the cluster-wide cpu-models.conf; a node lists them only for a
        # token that may see them, so their absence from a list proves nothing
        return None, None
    release = pve_versions.describe_release(accepts)
    how = (
        "its own list of CPU types"
        if accepts.source == pve_versions.FROM_NODE
        else "the CPU types of that release's qemu-server"
    )
    fixes = []
    try:
        first = pve_versions.first_release_with(spec.cputype)
    except GuardError:
        first = None
    if spec.custom is None and first is not None:
        version, via_qemu = first
        fixes.append(
            f"upgrade pve-qemu-kvm/qemu-server on {target.name} to {version} or later"
            + (" (with pve-qemu-kvm's cpu-models-x86_64.json)" if via_qemu else "")
        )
    who = "both know" if source is not None else f"{target.name} knows"
    same = names(spec.cputype) if spec.custom is None else None
    if same is not None and same != spec.cputype:  # the same model under its other name
        fixes.append(f"give the VM the same model under the name {who}: {same}")
    hosts = [n.cpu for n in (source, target) if n is not None and n.cpu is not None]
    both = engine.first_named(engine.recommend(hosts).ranked, names) if hosts else None
    if both is None and names("kvm64") is not None:
        both = names("kvm64")
    if both is not None and both != same:
        fixes.append(f"give the VM a type {who}: {both}")
    reason = Reason(
        "cpu-type-unknown-on-target",
        f"{target.name} ({release}) does not define cpu type {spec.cputype} ({how}): "
        f"qemu-server there refuses to start VM {vm.vmid} "
        f"(\"Built-in cputype '{spec.cputype}' is not defined\")",
    )
    return reason, (", or ".join(fixes) if fixes else None)


def verdict_body(v: Verdict, *, checked_at: str, facts_age_s: float) -> dict:
    """The JSON verdict body of the API (plus flag_source and clusters)."""
    return {
        "vmid": v.vmid,
        "name": v.name,
        "source": v.source,
        "target": v.target,
        "source_cluster": v.source_cluster,
        "target_cluster": v.target_cluster,
        "verdict": v.verdict,
        "reasons": [{"code": r.code, "message": r.message} for r in v.reasons],
        "cpu": v.cpu,
        "model": v.model,
        "missing": list(v.missing),
        "suggestion": v.suggestion,
        "flag_source": v.flag_source,
        "pending_cpu": v.pending_cpu,
        **({"facts": [{"code": n.code, "message": n.message} for n in v.notes]} if v.notes else {}),
        "checked_at": checked_at,
        "facts_age_s": round(facts_age_s, 1),
    }
