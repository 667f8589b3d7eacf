"""A migration verdict for one VM and one target: the engine's CPU verdict plus what the cluster
knows (target offline, machine version, Proxmox's own precondition check, the skip tag).

Pure: facts in, verdict out. The service gathers the facts; the API shapes the body.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from migration_guard.engine import pve_versions
from migration_guard.engine import verdicts as engine
from migration_guard.engine.cpu_spec import CpuSpec, parse_cpu
from migration_guard.engine.facts import NodeFacts, Precondition, VmFacts
from migration_guard.engine.hosts import HostCpu
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


def _machine_version(machine: str) -> tuple[int, ...] | None:
    """``pc-q35-9.0+pve0`` / ``pc-i440fx-8.1`` -> (9, 0); None when the string names no version."""
    base = machine.split("+", 1)[0]
    tail = base.rsplit("-", 1)[-1]
    try:
        return tuple(int(p) for p in tail.split("."))
    except ValueError:
        return None


def _version(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in text.split("+")[0].split(".")[:2])
    except ValueError:
        return None


def _machine_problem(vm: VmFacts, target: NodeFacts) -> str:
    """Why ``target`` cannot run the machine the VM runs (``pc-q35-9.2+pve1``), "" when it can.
    Its ``capabilities/qemu/machines`` list (qemu-server ``PVE/API2/Qemu/Machine.pm``) holds the
    QEMU machine versions of pve-qemu-kvm and the ``+pveN`` revisions qemu-server knows
    (``$PVE_MACHINE_VERSION`` in ``PVE/QemuServer/Machine.pm``); Proxmox refuses a version newer
    than its QEMU and a revision its qemu-server does not know (``can_run_pve_machine_version``)."""
    running = vm.running_machine
    base, _, revision = running.partition("+")
    listed = set(target.machines)
    bases = {m.split("+", 1)[0] for m in listed}
    wanted = _machine_version(running)
    newest = max((v for v in (_machine_version(m) for m in listed) if v), default=None)
    if base not in bases:
        if wanted and newest and wanted[:2] > newest[:2]:
            qemu = f" (QEMU {target.qemu_version})" if target.qemu_version else ""
            return (
                f"VM {vm.vmid} runs machine {running}, newer than any {target.name}'s QEMU{qemu} "
                f"offers: update pve-qemu-kvm on {target.name} first"
            )
        return ""  # an older version the list leaves out: QEMU keeps old machine versions
    if revision and revision != "pve0" and running not in listed:
        known = sorted(m.split("+", 1)[1] for m in listed if m.startswith(base + "+"))
        return (
            f"VM {vm.vmid} runs machine {running}, but qemu-server on {target.name} knows "
            f"{base} only up to {known[-1] if known else 'pve0'} (Proxmox refuses: \"Installed "
            f"qemu-server ... is too old\"): update qemu-server on {target.name} first"
        )
    return ""


def evaluate(
    vm: VmFacts,
    source: NodeFacts | None,
    target: NodeFacts,
    precondition: Precondition | None = None,
    *,
    source_known: bool = True,
) -> Verdict:
    """The verdict for moving ``vm`` (running or not) from ``source`` to ``target``.
    ``source`` None with ``source_known`` False: a cross-cluster source the service does not read."""
    reasons: list[Reason] = []
    suggestion: str | None = None
    model = ""
    missing: tuple[str, ...] = ()
    running = vm.status == "running"
    pending_note: Reason | None = None
    if vm.pending_cpu is not None and vm.pending_cpu != vm.cpu:
        later = vm.pending_cpu or "kvm64"
        if running:
            # a live migration starts the target with the CURRENT cpu (qemu-server applies
            # pending changes at a start only without a migration state, vm_start_nolock)
            after = evaluate(
                replace(vm, cpu=vm.pending_cpu, pending_cpu=None), source, target, precondition,
                source_known=source_known,
            )
            why = [r.message for r in after.reasons if r.code in DENY_CODES or r.code in UNKNOWN_CODES]
            pending_note = Reason(
                "pending-cpu",
                f"cpu {later} is pending for VM {vm.vmid}: it applies at the VM's next reboot (a full "
                f"stop and start); this live migration keeps cpu {vm.cpu or 'kvm64'}. After that reboot "
                f"the verdict for {target.name} would be {after.verdict}"
                + (f": {'; '.join(why)}" if after.verdict != "allow" and why else ""),
            )
        else:
            # a stopped VM's start applies its pending changes first: judge the cpu it will run
            pending_note = Reason(
                "pending-cpu",
                f"cpu {later} is pending for VM {vm.vmid}: its next start applies it, so it is "
                f"judged with cpu {later} (current config: {vm.cpu or 'kvm64'})",
            )
            vm = replace(vm, cpu=vm.pending_cpu)
    cpu_label = vm.cpu or "kvm64"
    flag_source = target.flag_source
    notices: list[Reason] = []  # said after the reasons that decide
    notes: list[Reason] = []

    def verdict(kind: str) -> Verdict:
        if pending_note is not None:
            reasons.append(pending_note)
        return Verdict(
            vmid=vm.vmid,
            name=vm.name,
            source=source.name if source else vm.node,
            target=target.name,
            verdict=kind,
            reasons=tuple(reasons) + tuple(notices),
            cpu=cpu_label,
            model=model,
            suggestion=suggestion,
            flag_source=flag_source,
            source_cluster=source.cluster if source else vm.cluster,
            target_cluster=target.cluster,
            missing=missing,
            pending_cpu=vm.pending_cpu,
            notes=tuple(notes),
        )

    if SKIP_TAG in vm.tags:
        reasons.append(
            Reason("bypassed", f"VM {vm.vmid} is tagged {SKIP_TAG}: the guard lets it through unchecked")
        )
        return verdict("allow")
    if not target.online:
        reasons.append(Reason("target-offline", f"{target.name} is offline: start it or pick another node"))
        return verdict("deny")

    try:
        spec: CpuSpec = parse_cpu(vm.cpu or None)
        engine.requirement(spec)  # resolves the model: an unknown one raises here
    except CpuSpecError as exc:
        reasons.append(Reason(exc.code, f"the VM's cpu value cannot be judged: {exc}"))
        return verdict("unknown")

    # which Proxmox each node runs: the names it accepts, and the direction of the move
    involved = [n for n in (source, target) if n is not None]
    names = pve_versions.Namer(involved)
    notices.extend(_release_notices(source, target))
    type_reason, type_fix = _type_on_target(vm, spec, source, target, names)
    if type_reason is not None:
        reasons.append(type_reason)
        suggestion = type_fix
        model = engine.requirement(spec).model
        return verdict("deny")

    if target.cpu is None:
        reasons.append(
            Reason(
                "flags-unknown", f"Proxmox gave no CPU flags for {target.name}, so its CPU cannot be judged"
            )
        )
        return verdict("unknown")
    source_cpu = source.cpu if source is not None else None
    if source is not None and source_cpu is None and spec.is_passthrough and running:
        reasons.append(
            Reason(
                "flags-unknown", f"Proxmox gave no CPU flags for {source.name}, so its CPU cannot be judged"
            )
        )
        return verdict("unknown")

    # nested nodes judged on their cpuinfo: the target always, the source when its CPU is passed through
    for node in (source if spec.is_passthrough and running and source_known else None, target):
        note = nested_note(node)
        if note is not None:
            notes.append(note)
    result = engine.check_migration(
        spec, source_cpu if source_known else None, target.cpu, running=running, names=names
    )
    model = result.model
    missing = result.missing
    suggestion = result.suggestion
    reasons.extend(result.reasons)
    kind = result.verdict

    # the machine the VM runs (version and +pveN revision) must exist on the target
    if running and not vm.running_machine:
        reasons.append(
            Reason(
                "machine-check-skipped",
                f"Proxmox did not say which machine VM {vm.vmid} runs (running-machine is missing "
                "when QMP does not answer in time), so the machine version check was skipped",
            )
        )
    elif running and target.machines:
        problem = _machine_problem(vm, target)
        if problem:
            reasons.append(Reason("machine-unsupported", problem))
            kind = "deny"
    elif running and vm.running_machine:
        wanted = _machine_version(vm.running_machine)
        offered = _version(target.qemu_version) if target.qemu_version else None
        if wanted and offered and wanted[:2] > offered[:2]:
            reasons.append(
                Reason(
                    "machine-unsupported",
                    f"VM {vm.vmid} runs machine {vm.running_machine}, newer than {target.name}'s QEMU "
                    f"{target.qemu_version}: update pve-qemu-kvm on {target.name} first",
                )
            )
            kind = "deny"

    if precondition is not None:
        if not precondition.checked:
            if precondition.skipped_reason:
                reasons.append(Reason("precheck-skipped", precondition.skipped_reason))
        else:
            if precondition.local_resources:
                reasons.append(
                    Reason(
                        "local-resources",
                        f"VM {vm.vmid} uses local resources ({', '.join(precondition.local_resources)}) "
                        "that cannot move with it",
                    )
                )
                kind = "deny"
            blocked = precondition.unavailable_storages + precondition.unavailable_resources
            if blocked:
                reasons.append(
                    Reason(
                        "storage-unavailable",
                        f"{target.name} lacks storage or resources the VM needs: {', '.join(blocked)}",
                    )
                )
                kind = "deny"
            if precondition.local_disks and kind != "deny":
                reasons.append(
                    Reason(
                        "local-disks",
                        f"VM {vm.vmid} has local disks ({', '.join(precondition.local_disks)}): "
                        "migrate with --with-local-disks",
                    )
                )
    return verdict(kind)


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
    """The JSON verdict body of the API (issue 8's field names, plus flag_source and clusters)."""
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
