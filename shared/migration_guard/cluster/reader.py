"""The cluster reader: what a Proxmox VE cluster says about its nodes and VMs, over proxmoxer.

One ``ClusterReader`` per cluster. Every proxmoxer / requests exception is mapped here, once,
to the project's errors (``migration_guard.errors``); nothing above this module sees a library error.
The reader does no caching: the service's cache layer decides how long facts live.
Calls are synchronous (proxmoxer uses requests); the service runs them in threads.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from migration_guard.cluster.answers import bad_shape, kind_of
from migration_guard.cluster.pair import both
from migration_guard.cluster.release import node_release, qemu_version_of
from migration_guard.cluster.stats import CallStats
from migration_guard.cluster.vm_facts import tags_of, vm_facts_from
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
        *,
        ca_bundle: str | None = None,
        proxies: dict[str, str] | None = None,
    ) -> None:
        """``ca_bundle``: the CA file ``verify_ssl=True`` trusts instead of the system's (requests'
        REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE); ``proxies``: scheme -> proxy URL for this host (the
        proxy variables' meaning for it, NO_PROXY applied). Both come from the service's settings,
        which read the environment once; requests itself reads nothing of it."""
        self.name = name
        self.host, self.port = split_host(host)
        self.user = user
        self.token_name = token_name
        self.timeout = timeout
        self.stats = stats or CallStats()
        self._cpu_flags_unsupported = False
        if verify_ssl is True and ca_bundle:
            verify_ssl = ca_bundle
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
        # requests would read the proxy variables (HTTPS_PROXY, NO_PROXY, ...) and ~/.netrc anew on
        # every request: a fifth of a call's CPU here. The settings read them once, same meaning.
        session.proxies = dict(proxies or {})
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
                f'Proxmox at {self.where} answered {what} with JSON that has no "data" field'
            ) from None
        problem = bad_shape(kind, result)
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
                    f"{kind_of(nodes)} for flag {str(row['name'])[:40]!r}, not a list of nodes"
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
            status, machines = both(
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
                f"Proxmox at {self.where} answered {what} with cpuinfo {kind_of(cpuinfo)}, not an object"
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
            qemu_version=qemu_version_of(machines),
            machines=tuple(sorted(str(m.get("id")) for m in machines if m.get("id"))),
            fetched_at=time.time(),
        )

    def node_release(self, name: str) -> tuple[str, tuple[str, ...], str]:
        """The node's pve-manager version and the ``cpu:`` types its Proxmox accepts (release.py)."""
        return node_release(self._call, self._api, name)

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
                f"{kind_of(bad)}, not a number"
            )
        return [
            VmSummary(
                cluster=self.name,
                vmid=int(r["vmid"]),
                node=str(r.get("node", "")),
                status=str(r.get("status", "unknown")),
                name=str(r.get("name") or ""),
                tags=tags_of(r.get("tags")),
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
        config, status = both(lambda: self.vm_config(node, vmid), lambda: self.vm_status(node, vmid))
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

    def snippet_volumes(self, node: str, storage: str) -> frozenset[str]:
        """The volume ids of the ``snippets`` on ``storage`` as ``node`` sees it (``GET
        /nodes/{node}/storage/{storage}/content?content=snippets``, pve-storage
        ``PVE/API2/Storage/Content.pm`` ``index``; needs Datastore.Audit or Datastore.AllocateSpace on
        /storage/{storage}). A storage that node does not have is an error (ProxmoxError)."""
        rows = self._call(
            "storage-content",
            f"the snippets of storage {storage} on node {node}",
            lambda: self._api.nodes(node).storage(storage).content.get(content="snippets"),
        )
        return frozenset(str(r["volid"]) for r in rows)

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
