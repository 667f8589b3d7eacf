"""Prometheus metrics of one service instance (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from migration_guard.cluster.reader import CallStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _ProxmoxCollector:
    """Proxmox calls and errors, read from the cluster reader's CallStats at scrape time."""

    def __init__(self, stats: CallStats, service: object) -> None:
        self.stats = stats
        self.service = service

    def describe(self):  # no fixed description: collected at scrape time
        return []

    def collect(self):
        calls = CounterMetricFamily(
            "migration_guard_proxmox_calls", "Proxmox API calls by kind", labels=["kind"]
        )
        errors = CounterMetricFamily(
            "migration_guard_proxmox_errors", "Proxmox API call errors by kind of error", labels=["error"]
        )
        with self.stats._lock:
            for kind, n in sorted(self.stats.calls.items()):
                calls.add_metric([kind], n)
            for kind, n in sorted(self.stats.errors.items()):
                errors.add_metric([kind], n)
        yield calls
        yield errors
        store = getattr(self.service, "store", None)
        events = getattr(self.service, "events", None)
        if store is not None:
            yield GaugeMetricFamily(
                "migration_guard_store_up", "1 when Redis answers", value=1 if store.up else 0
            )
        coverage = getattr(getattr(getattr(self.service, "coverage", None), "latest", None), "last", None)
        if coverage is not None:  # (GET /v1/coverage, renewed by /metrics every few minutes)
            yield GaugeMetricFamily(
                "migration_guard_unguarded_vms",
                "VMs without the guard's hookscript (templates and migration-guard-skip VMs aside)",
                value=len(coverage["unguarded"]),
            )
        if events is not None:
            yield GaugeMetricFamily(
                "migration_guard_events_pending",
                "events and decisions waiting for Redis",
                value=events.pending,
            )
        metrics = getattr(self.service, "metrics", None)
        if metrics is not None and metrics.ha_risks is not None:  # none before the first reading
            yield GaugeMetricFamily(
                "migration_guard_ha_risks",
                "HA VMs that HA may start on a node that cannot run them (renewed every few minutes)",
                value=metrics.ha_risks,
            )


class Metrics:
    def __init__(self, stats: CallStats, service: object = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.checks = Counter(
            "migration_guard_checks", "Verdicts answered, by verdict", ["verdict"], registry=self.registry
        )
        self.latency = Histogram(
            "migration_guard_check_latency_seconds",
            "Time to answer a check or decision",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.cache = Counter(
            "migration_guard_cache_hits",
            "Facts answered from cache, by kind and level (l1, store, stale)",
            ["kind", "level"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "migration_guard_decisions", "Decisions recorded, by verdict", ["verdict"], registry=self.registry
        )
        #: the HA risks found by the last GET /v1/ha/risks (None: not asked yet)
        self.ha_risks: int | None = None
        self._verdict_children = {v: self.checks.labels(v) for v in ("allow", "deny", "unknown")}
        self._hit_children: dict[tuple[str, str], object] = {}
        self.registry.register(_ProxmoxCollector(stats, service))

    def verdict(self, kind: str) -> None:
        self._verdict_children[kind].inc()

    def hit(self, kind: str, level: str) -> None:
        child = self._hit_children.get((kind, level))
        if child is None:
            child = self._hit_children[(kind, level)] = self.cache.labels(kind, level)
        child.inc()  # type: ignore[attr-defined]

    def render(self) -> bytes:
        return generate_latest(self.registry)
