"""The cluster reader: what a Proxmox VE cluster says about its nodes and VMs, over proxmoxer.

One ``ClusterReader`` per cluster. Every proxmoxer / requests exception is mapped here, once,
to the project's errors (``migration_guard.errors``); nothing above this module sees a library error.
The reader does no caching: the service's cache layer decides how long facts live.
Calls are synchronous (proxmoxer uses requests); the service runs them in threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from migration_guard.engine.facts import NodeFacts, Precondition, VmFacts, VmSummary
from migration_guard.engine.hosts import (
    host_from_proxmox,
    host_from_qemu_flags,
    proxmox_family,
    proxmox_vendor,
    vendor_of,
)
from migration_guard.errors import (
    HostDataError,
    NodeUnreachable,
    ProxmoxAuthError,
    ProxmoxBadAnswer,
    ProxmoxError,
    ProxmoxNotFound,
    ProxmoxNotImplemented,
    ProxmoxPermissionError,
    ProxmoxUnreachable,
    UnknownNodeError,
    UnknownVmError,
)

T = TypeVar("T")

log = logging.getLogger("migration_guard.inventory")

DEFAULT_PORT = 8006

#: what ``data`` of each path the reader reads must be: (type, keys every row or object needs).
#: Anything else is a bad answer (ProxmoxBadAnswer), never an empty value. The shapes are those of
#: the paths' ``returns`` schemas in qemu-server ``PVE/API2/Qemu.pm``, ``PVE/API2/Qemu/Machine.pm``
#: and pve-manager ``PVE/API2/Nodes.pm``, ``PVE/API2/Cluster.pm``, ``PVE/API2/Cluster/Qemu/CPUFlags.pm``.
SHAPES: dict[str, tuple[type, tuple[str, ...]]] = {
    "nodes": (list, ("node",)),
    "cpu-flags": (list, ("name",)),
    "node-status": (dict, ()),
    "node-machines": (list, ("id",)),
    "resources": (list, ("vmid",)),
    "vm-config": (list, ("key",)),  # GET .../pending: one row per option
    "vm-status": (dict, ("status",)),
    "node-vms": (list, ("vmid",)),
    "vm-precondition": (dict, ()),
}


def split_host(host: str) -> tuple[str, int]:
    """``host[:port]`` (IPv6 in brackets) -> (host, port); the port defaults to 8006."""
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[1:end], host[end + 1 :]
        return name, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
    if host.count(":") == 1:
        name, port = host.split(":")
        return name, int(port)
    return host, DEFAULT_PORT


class CallStats:
    """Counts of Proxmox calls and errors, by kind (read by /metrics and the benchmarks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def record(self, kind: str, error: str | None = None) -> None:
        with self._lock:
            self.calls[kind] += 1
            if error is not None:
                self.errors[error] += 1

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.calls.values())


def _tags(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    text = str(value).replace(",", ";").replace(" ", ";")
    return tuple(t for t in text.split(";") if t)


def _smbios_uuid(value: str) -> str:
    for part in str(value or "").split(","):
        key, _, val = part.partition("=")
        if key.strip() == "uuid":
            return val.strip().lower()
    return ""


def _qemu_version_of(machines: list[dict]) -> str:
    """The newest machine version the node's QEMU offers, as its QEMU version (e.g. "9.2")."""
    best: tuple[int, ...] = ()
    for entry in machines:
        version = str(entry.get("version") or "")
        try:
            parsed = tuple(int(p) for p in version.split("+")[0].split("."))
        except ValueError:
            continue
        best = max(best, parsed)
    return ".".join(str(p) for p in best)


class ClusterReader:
    """Reads one cluster through the Proxmox API with an API token."""

    def __init__(
        self,
        name: str,
        host: str,
        user: str,
        token_name: str,
        token_value: str,
        verify_ssl: bool | str = True,
        timeout: float = 5.0,
        stats: CallStats | None = None,
    ) -> None:
        self.name = name
        self.host, self.port = split_host(host)
        self.user = user
        self.token_name = token_name
        self.timeout = timeout
        self.stats = stats or CallStats()
        self._cpu_flags_unsupported = False
        if verify_ssl is True:  # requests' own environment rule, read once (see below)
            verify_ssl = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self._api = ProxmoxAPI(
            self.host,
            port=self.port,
            user=user,
            token_name=token_name,
            token_value=token_value,
            verify_ssl=verify_ssl,
            timeout=timeout,
            backend="https",
            service="PVE",
        )
        # a node evacuation asks about hundreds of VMs at once: keep enough connections open
        session = self._api._store["session"]
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64)
        session.mount("https://", adapter)
        # requests reads the proxy variables (HTTPS_PROXY, NO_PROXY, ...) and ~/.netrc anew on
        # every request: a fifth of a call's CPU here. They are read once, with the same meaning.
        session.proxies = requests.utils.get_environ_proxies(f"https://{self.host}:{self.port}/")
        session.trust_env = False

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def token_id(self) -> str:
        return f"{self.user}!{self.token_name}"

    # --- the one place library errors become ours -----------------------------------------------

    def _call(self, kind: str, what: str, fn: Callable[[], T]) -> T:
        try:
            result = fn()
        except ResourceException as exc:
            err = self._map_status(exc.status_code, what, exc)
            self.stats.record(kind, err.code)
            raise err from None
        except requests.exceptions.Timeout:
            self.stats.record(kind, "timeout")
            raise ProxmoxUnreachable(
                f"Proxmox at {self.where} did not answer {what} within {self.timeout:g} s"
            ) from None
        except requests.exceptions.SSLError as exc:
            self.stats.record(kind, "tls")
            raise ProxmoxUnreachable(
                f"TLS to Proxmox at {self.where} failed ({_short(exc)}): set MIGRATION_GUARD_PVE_VERIFY_SSL "
                "to the cluster's CA file (/etc/pve/pve-root-ca.pem)"
            ) from None
        except requests.exceptions.RequestException as exc:
            self.stats.record(kind, "connection")
            raise ProxmoxUnreachable(f"cannot reach Proxmox at {self.where}: {_short(exc)}") from None
        except (ValueError, KeyError, TypeError):
            # proxmoxer's JSON serializer: JSON without "data" (KeyError), a JSON list or string
            # (TypeError); a ValueError from a body it could not decode at all
            self.stats.record(kind, "bad-answer")
            raise ProxmoxBadAnswer(
                f"Proxmox at {self.where} answered {what} with JSON that has no \"data\" field"
            ) from None
        problem = _bad_shape(kind, result)
        if problem:
            self.stats.record(kind, "bad-answer")
            raise ProxmoxBadAnswer(
                f"Proxmox at {self.where} answered {what} with {problem}, not Proxmox's JSON "
                "(a proxy or load balancer in front of it?)"
            )
        self.stats.record(kind)
        return result

    def _map_status(self, status: int, what: str, exc: ResourceException) -> ProxmoxError:
        detail = str(getattr(exc, "content", "") or "").strip()
        if status == 401:
            return ProxmoxAuthError(
                f"Proxmox at {self.where} refused the API token {self.token_id} (401): check "
                "MIGRATION_GUARD_PVE_USER, MIGRATION_GUARD_PVE_TOKEN_NAME and MIGRATION_GUARD_PVE_TOKEN_VALUE"
            )
        if status == 403:
            return ProxmoxPermissionError(
                f"the API token {self.token_id} may not read {what} (403): {detail or 'permission denied'}"
            )
        if status == 501:
            return ProxmoxNotImplemented(f"Proxmox at {self.where} does not offer {what} (501)")
        if status == 595 or "no route to host" in detail.lower():
            return NodeUnreachable(f"Proxmox could not reach the node for {what} ({status}: {detail})")
        if "does not exist" in detail or status == 404:
            return ProxmoxNotFound(f"Proxmox says {what} does not exist: {detail}")
        return ProxmoxError(f"Proxmox at {self.where} failed {what} ({status}): {detail or exc}")

    # --- nodes --------------------------------------------------------------------------------

    def nodes(self) -> list[NodeFacts]:
        """Every node with its online state (no CPU yet)."""
        rows = self._call("nodes", "the node list (/nodes)", lambda: self._api.nodes.get())
        now = time.time()
        return [
            NodeFacts(
                cluster=self.name, name=str(r["node"]), online=r.get("status") == "online", fetched_at=now
            )
            for r in rows
        ]

    def cluster_cpu_flags(self) -> dict[str, frozenset[str]] | None:
        """Node -> QEMU flags its KVM offers (/cluster/qemu/cpu-flags, pve-manager 9.1.15 and
        later); None where the cluster answers 501 (older pve-manager). Asked on every call (the
        service's inventory refresh): a cluster upgraded later starts answering, and each switch
        between the two is logged once."""
        try:
            rows = self._call(
                "cpu-flags",
                "the cluster CPU flags (/cluster/qemu/cpu-flags)",
                lambda: self._api.cluster.qemu("cpu-flags").get(),
            )
        except (ProxmoxNotImplemented, ProxmoxNotFound):
            if not self._cpu_flags_unsupported:
                log.info(
                    "cluster %s has no /cluster/qemu/cpu-flags (pve-manager older than 9.1.15): "
                    "node CPUs are judged on /proc/cpuinfo flags; asked again on every refresh",
                    self.name,
                )
            self._cpu_flags_unsupported = True
            return None
        if self._cpu_flags_unsupported:
            log.info(
                "cluster %s answers /cluster/qemu/cpu-flags now (pve-manager upgraded): node CPUs "
                "are judged on QEMU's own report",
                self.name,
            )
            self._cpu_flags_unsupported = False
        offered: dict[str, set[str]] = {}
        for row in rows:
            nodes = row.get("supported-on", [])  # optional in the schema
            if not isinstance(nodes, list):
                raise ProxmoxBadAnswer(
                    f"Proxmox at {self.where} answered the cluster CPU flags with supported-on "
                    f"{_kind_of(nodes)} for flag {str(row['name'])[:40]!r}, not a list of nodes"
                )
            for node in nodes:
                offered.setdefault(str(node), set()).add(str(row["name"]))
        return {node: frozenset(flags) for node, flags in offered.items()}

    def node_facts(self, name: str, qemu_flags: frozenset[str] | None = None) -> NodeFacts:
        """Status, versions and machine types of one node. With ``qemu_flags`` (from
        ``cluster_cpu_flags``) the CPU is judged on QEMU's own report, else on cpuinfo.flags."""
        what = f"the status of node {name}"
        try:
                # one round trip, not two: status and machine types are asked at the same time
            status, machines = _both(
                lambda: self._call("node-status", what, lambda: self._api.nodes(name).status.get()),
                lambda: self._call(
                    "node-machines",
                    f"the machine types of node {name}",
                    lambda: self._api.nodes(name).capabilities.qemu.machines.get(),
                ),
            )
        except NodeUnreachable:
            raise
        except ProxmoxUnreachable as exc:
            if "did not answer" not in str(exc):
                raise
            # the API answered the node list, but not this node's status in time: Proxmox proxies
            # it to the node (pve-manager PVE/API2/Nodes.pm, proxyto => 'node'), and a node that
            # is powered off but still listed online is answered only after the proxy's 30 s
            # timeout. This node is unreachable, not the cluster.
            raise NodeUnreachable(
                f"node {name} did not answer within {self.timeout:g} s (Proxmox lists it online; "
                "a powered-off or cut-off node answers only after Proxmox's 30 s proxy timeout)"
            ) from None
        except ProxmoxError as exc:
            if "hostname lookup" in str(exc) or isinstance(exc, ProxmoxNotFound):
                raise UnknownNodeError(f"cluster {self.name} has no node {name}") from None
            raise
        cpuinfo = status.get("cpuinfo") or {}
        if not isinstance(cpuinfo, dict):
            raise ProxmoxBadAnswer(
                f"Proxmox at {self.where} answered {what} with cpuinfo {_kind_of(cpuinfo)}, not an object"
            )
        model = str(cpuinfo.get("model") or "")
        cpu = None
        flag_source = "none"
        if qemu_flags:
            vendor = proxmox_vendor(cpuinfo)
            cpu = host_from_qemu_flags(
                name,
                model,
                qemu_flags,
                vendor_of(vendor, model, ()) if vendor else None,
                proxmox_family(cpuinfo),
            )
            flag_source = "qemu-kvm"
        else:
            try:
                cpu = host_from_proxmox(name, cpuinfo)
                flag_source = "cpuinfo"
            except HostDataError:
                cpu = None
        pve = str(status.get("pveversion") or "")
        return NodeFacts(
            cluster=self.name,
            name=name,
            online=True,
            cpu_model=model,
            cpu=cpu,
            flag_source=flag_source,
            pve_version=pve.split("/")[1] if pve.count("/") >= 2 else pve,
            kernel_version=str(status.get("kversion") or ""),
            qemu_version=_qemu_version_of(machines),
            machines=tuple(sorted(str(m.get("id")) for m in machines if m.get("id"))),
            fetched_at=time.time(),
        )

    # --- the node's Proxmox release and the CPU types it accepts ----------------------------------

    def node_release(self, name: str) -> tuple[str, tuple[str, ...], str]:
        """(the node's pve-manager version from ``/nodes/{node}/version``, the ``cpu:`` types its
        Proxmox accepts from ``/nodes/{node}/capabilities/qemu/cpu`` (qemu-server
        ``PVE/API2/Qemu/CPU.pm``: built-in, Proxmox's own and custom models), "node" as their
        source). A release without the list (501/404) or a token that may not read it (403) gives
        ``()`` and "": the guard then uses the release's data
        (shared/migration_guard/engine/pve_versions.py)."""

        def version() -> str:
            try:
                row = self._call(
                    "node-version",
                    f"the version of node {name}",
                    lambda: self._api.nodes(name).version.get(),
                )
            except (ProxmoxNotImplemented, ProxmoxNotFound, ProxmoxPermissionError):
                return ""
            return str((row or {}).get("version") or "")

        def cpu_types() -> tuple[tuple[str, ...], str]:
            try:
                rows = self._call(
                    "node-cpu-types",
                    f"the CPU types of node {name}",
                    lambda: self._api.nodes(name).capabilities.qemu.cpu.get(),
                )
            except (ProxmoxNotImplemented, ProxmoxNotFound, ProxmoxPermissionError):
                return (), ""
            names = tuple(
                sorted({str(r["name"]) for r in rows or () if isinstance(r, dict) and r.get("name")})
            )
            return (names, "node") if names else ((), "")

        pve, (types, source) = _both(version, cpu_types)
        return pve, types, source

    # --- VMs ------------------------------------------------------------------------------------

    def vms(self) -> list[VmSummary]:
        rows = self._call(
            "resources",
            "the VM list (/cluster/resources)",
            lambda: self._api.cluster.resources.get(type="vm"),
        )
        bad = next((r["vmid"] for r in rows if not str(r["vmid"]).isdigit()), None)
        if bad is not None:
            raise ProxmoxBadAnswer(
                f"Proxmox at {self.where} answered the VM list (/cluster/resources) with vmid "
                f"{_kind_of(bad)}, not a number"
            )
        return [
            VmSummary(
                cluster=self.name,
                vmid=int(r["vmid"]),
                node=str(r.get("node", "")),
                status=str(r.get("status", "unknown")),
                name=str(r.get("name") or ""),
                tags=_tags(r.get("tags")),
                template=bool(r.get("template")),
            )
            for r in rows
            if r.get("type", "qemu") == "qemu"
        ]

    def find_vm(self, vmid: int) -> VmSummary:
        for vm in self.vms():
            if vm.vmid == vmid:
                return vm
        raise UnknownVmError(f"cluster {self.name} has no VM {vmid}")

    def find_vm_by_uuid(self, smbios_uuid: str) -> VmFacts | None:
        """The VM whose config carries ``smbios1: uuid=<smbios_uuid>`` (reads each config)."""
        wanted = smbios_uuid.strip().lower()
        for vm in self.vms():
            try:
                facts = self.vm_facts(vm.node, vm.vmid)
            except (ProxmoxNotFound, ProxmoxUnreachable):
                continue
            if facts.smbios_uuid == wanted:
                return facts
        return None

    def vm_facts(self, node: str, vmid: int, summary: VmSummary | None = None) -> VmFacts:
        """Config and (when running) status/current of one VM, both asked at once."""
        config, status = _both(lambda: self.vm_config(node, vmid), lambda: self.vm_status(node, vmid))
        return vm_facts_from(self.name, node, vmid, config, status, summary)

    def vm_config(self, node: str, vmid: int) -> dict:
        """The VM's CURRENT config, with its pending changes under ``"pending"`` (option -> value,
        "" for a pending delete). One call: ``GET /nodes/{node}/qemu/{vmid}/pending`` (qemu-server
        ``PVE/API2/Qemu.pm`` ``vm_pending``, through pve-guest-common
        ``PVE::GuestHelpers::config_with_pending_array``) answers every option with its current
        ``value`` and its ``pending`` one, the same as ``config?current=1`` plus the pending values,
        at the cost of one ``config`` read. ``GET .../config`` without ``current=1`` would apply
        the pending changes: a running VM's pending cpu is not what a live migration starts."""
        try:
            rows = self._call(
                "vm-config",
                f"the config of VM {vmid}",
                lambda: self._api.nodes(node).qemu(vmid).pending.get(),
            )
        except ProxmoxNotFound:
            raise UnknownVmError(f"VM {vmid} is not on node {node} of cluster {self.name}") from None
        config: dict[str, Any] = {}
        pending: dict[str, str] = {}
        for row in rows:
            key = str(row["key"])
            if "value" in row:
                config[key] = row["value"]
            if "pending" in row:
                pending[key] = str(row["pending"])
            elif row.get("delete"):
                pending[key] = ""
        config["pending"] = pending
        return config

    def vm_status(self, node: str, vmid: int) -> dict:
        """``status/current`` of one VM: its state and, when running, the machine and QEMU it runs."""
        try:
            return self._call(
                "vm-status",
                f"the status of VM {vmid}",
                lambda: self._api.nodes(node).qemu(vmid).status.current.get(),
            )
        except ProxmoxNotFound:
            raise UnknownVmError(f"VM {vmid} is not on node {node} of cluster {self.name}") from None

    def node_vm_statuses(self, node: str) -> dict[int, dict]:
        """The status of every VM of one node in one call (``GET /nodes/{node}/qemu?full=1``:
        qemu-server's ``vmstatus`` with ``full``, which carries ``running-machine`` and
        ``running-qemu`` for running VMs, as ``status/current`` does). Used when many VMs of one
        node are asked at once (a node evacuation)."""
        try:
            rows = self._call(
                "node-vms",
                f"the VM list of node {node}",
                lambda: self._api.nodes(node).qemu.get(full=1),
            )
        except ProxmoxNotFound:
            raise UnknownNodeError(f"cluster {self.name} has no node {node}") from None
        out: dict[int, dict] = {}
        for row in rows:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                out[int(row["vmid"])] = row
        return out

    def migrate_precondition(self, node: str, vmid: int, target: str | None = None) -> Precondition:
        """Proxmox's own check (storage, local disks and devices, HA rules) for every other node at
        once: qemu-server answers ``not_allowed_nodes`` for all nodes whatever ``target`` is, so one
        call per VM serves every target (``Precondition.toward``). Needs VM.Migrate: without it the
        answer says the check was skipped, it does not fail."""
        query = {"target": target} if target else {}
        try:
            answer = self._call(
                "vm-precondition",
                f"the migration precondition of VM {vmid}",
                lambda: self._api.nodes(node).qemu(vmid).migrate.get(**query),
            )
        except ProxmoxPermissionError:
            return Precondition(
                checked=False,
                skipped_reason=(
                    f"the API token {self.token_id} lacks VM.Migrate, so Proxmox's own storage and "
                    "local-resource check was skipped"
                ),
            )
        by_node: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        for name, blockers in (answer.get("not_allowed_nodes") or {}).items():
            if not isinstance(blockers, dict):
                continue
            storages = tuple(str(s) for s in blockers.get("unavailable_storages") or ())
            resources = tuple(str(r) for r in blockers.get("unavailable-resources") or ())
            ha = tuple(
                f"HA resource {b.get('sid', '?')} ({b.get('cause', 'affinity')})"
                if isinstance(b, dict)
                else str(b)
                for b in blockers.get("blocking-ha-resources") or ()
            )
            if storages or resources or ha:
                by_node[str(name)] = (storages, resources + ha)
        pre = Precondition(
            checked=True,
            local_disks=tuple(_describe(d) for d in answer.get("local_disks") or ()),
            local_resources=tuple(str(r) for r in answer.get("local_resources") or ()),
            by_node=by_node,
        )
        return pre.toward(target) if target else pre


def vm_facts_from(
    cluster: str,
    node: str,
    vmid: int,
    config: dict,
    status: dict,
    summary: VmSummary | None = None,
) -> VmFacts:
    """A VM's facts from its config and its status (a ``status/current`` answer or its row of
    ``GET /nodes/{node}/qemu?full=1``: the same fields)."""
    running = status.get("status") == "running"
    found = config.get("pending")
    pending: dict = found if isinstance(found, dict) else {}
    pending_cpu = str(pending["cpu"]) if "cpu" in pending else None
    if pending_cpu == str(config.get("cpu") or ""):
        pending_cpu = None
    return VmFacts(
        cluster=cluster,
        vmid=vmid,
        node=node,
        status=str(status.get("status") or (summary.status if summary else "unknown")),
        name=str(config.get("name") or (summary.name if summary else "")),
        tags=_tags(config.get("tags")) or (summary.tags if summary else ()),
        cpu=str(config.get("cpu") or ""),
        pending_cpu=pending_cpu,
        machine=str(config.get("machine") or ""),
        hookscript=str(config.get("hookscript") or ""),
        lock=str(config.get("lock") or ""),
        running_machine=str(status.get("running-machine") or "") if running else "",
        running_qemu=str(status.get("running-qemu") or "") if running else "",
        smbios_uuid=_smbios_uuid(config.get("smbios1", "")),
        vmgenid=str(config.get("vmgenid") or ""),
        fetched_at=time.time(),
    )


#: threads for the second of two calls made at once (the caller's thread makes the first)
_PAIR_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="pve-pair")


def _both(first: Callable[[], T], second: Callable[[], Any]) -> tuple[T, Any]:
    """Run two Proxmox calls at the same time; the first one's error wins if both fail."""
    other = _PAIR_POOL.submit(second)
    try:
        a = first()
    except BaseException:
        other.cancel()
        with contextlib.suppress(BaseException):  # its error is the lesser one
            other.result()
        raise
    return a, other.result()


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"the string {_snippet(value)!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return "an object"


def _snippet(text: str, limit: int = 60) -> str:
    """A short, printable piece of a body (no control characters; cut)."""
    clean = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def _not_json(raw: Any) -> str:
    """What a body that is not JSON looks like, in a few words."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
    low = text.lower()
    if "<html" in low or "<!doctype" in low:
        start, end = low.find("<title>"), low.find("</title>")
        title = _snippet(text[start + 7 : end]) if 0 <= start < end else ""
        return f"an HTML page ({title})" if title else "an HTML page"
    if not text.strip():
        return "an empty body"
    if text.lstrip()[:1] in ("{", "["):
        return f"JSON that does not parse (cut off after {len(raw)} bytes?)"
    return f"text that is not JSON ({_snippet(text)!r})"


def _bad_shape(kind: str, data: Any) -> str:
    """"" when ``data`` has the shape path ``kind`` returns, else what came back instead."""
    # proxmoxer's JSON serializer answers a body it cannot decode with {"errors": <the bytes>}
    if isinstance(data, dict) and list(data) == ["errors"] and isinstance(data["errors"], bytes | str):
        return _not_json(data["errors"])
    shape = SHAPES.get(kind)
    if shape is None:
        return ""
    want, keys = shape
    if not isinstance(data, want):
        return f"data {_kind_of(data)} where {'a list' if want is list else 'an object'} was expected"
    if isinstance(data, list):
        for row in data:
            if not isinstance(row, dict):
                return f"a row that is {_kind_of(row)}, not an object"
            missing = [k for k in keys if k not in row]
            if missing:
                return f"a row without {missing[0]!r}"
    elif isinstance(data, dict):
        missing = [k for k in keys if k not in data]
        if missing:
            return f"an object without {missing[0]!r}"
    return ""


def _describe(disk: Any) -> str:
    if isinstance(disk, dict):
        return str(disk.get("volid") or disk.get("drivename") or disk)
    return str(disk)


def _short(exc: BaseException) -> str:
    text = str(exc)
    # requests' messages repeat the pool and URL; keep the reason at the end
    if "Caused by" in text:
        text = text.split("Caused by", 1)[1].strip(" ()'\"")
    return text[:200]
