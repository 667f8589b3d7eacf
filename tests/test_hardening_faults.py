"""Hardening (issue 5): faults with real processes.

- Redis stopped and restarted under a steady stream of checks and vetoes: no 500, answers keep
  coming from Proxmox, /readyz says degraded, and every veto made during the outage reaches the
  event stream exactly once (in order) when Redis is back.
- Proxmox slow (2 s), failing (5xx), refusing the token (401), a node offline, a node whose status
  lacks cpuinfo.flags: each a defined verdict or error with an operator message; stale facts carry
  their age.
- The service SIGKILLed during a burst of real hookscript runs: every hook ends within its timeout
  under its fail policy (open -> 0 and a warning line, closed -> 5).

The service runs as its production entry (``migration-guard serve``) in its own process; Redis is
a private ``redis-server`` started here; Proxmox is the Proxmox-shaped HTTPS test server.
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis as redis_sync

from shared.events import EVENTS_STREAM
from shared.pve_testserver import start_server
from tests.e2e_support import HOOK, Proc, base_env, cli_argv, free_port, wait_until

pytestmark = pytest.mark.integration

SCENARIO = json.loads((Path(__file__).parent / "fixtures" / "service" / "scenario.json").read_text())
TOKEN = "hardening-faults-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def scenario(**changes) -> dict:
    sc = copy.deepcopy(SCENARIO)
    sc.update(changes)
    return sc


def service_env(pve, port: int, **extra: str) -> dict[str, str]:
    tok = pve.token
    values = {
        "MIGRATION_GUARD_PVE_HOST": pve.host_port,
        "MIGRATION_GUARD_PVE_USER": tok["user"],
        "MIGRATION_GUARD_PVE_TOKEN_NAME": tok["name"],
        "MIGRATION_GUARD_PVE_TOKEN_VALUE": tok["value"],
        "MIGRATION_GUARD_PVE_VERIFY_SSL": pve.ca_path,
        "MIGRATION_GUARD_API_TOKENS": TOKEN,
        "MIGRATION_GUARD_PVE_CLUSTER_NAME": "lab",
        "MIGRATION_GUARD_PVE_TIMEOUT": "2",
        "MIGRATION_GUARD_LISTEN": f"127.0.0.1:{port}",
        "MIGRATION_GUARD_REDIS_URL": "",
    }
    values.update({f"MIGRATION_GUARD_{k.upper()}": v for k, v in extra.items()})
    return base_env(**values)


def start_service(pve, **extra: str) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc("service", cli_argv("serve", "--log-level", "warning"), service_env(pve, port, **extra))
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(base + "/healthz", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 30, "the service's /healthz", proc)
    return proc, base


def start_redis(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis_sync.Redis(port=port, socket_timeout=0.5)
    for _ in range(100):
        try:
            client.ping()
            return proc
        except redis_sync.exceptions.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    pytest.skip("could not start a private redis-server")


@pytest.fixture
def pve():
    server = start_server(scenario())
    yield server
    server.stop()


# --- Redis stopped and restarted while checks run --------------------------------------------------


class Load:
    """Checks and vetoes sent without pause from two threads; every answer recorded."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: list[tuple[str, int, dict]] = []  # (kind, status, body)
        self.threads = [
            threading.Thread(target=self._checks, daemon=True),
            threading.Thread(target=self._vetoes, daemon=True),
        ]

    def _record(self, kind: str, answer: httpx.Response) -> None:
        with self.lock:
            self.answers.append((kind, answer.status_code, answer.json()))

    def _checks(self) -> None:
        with httpx.Client(base_url=self.base, headers=AUTH, timeout=10) as c:
            i = 0
            while not self.stop.is_set():
                vmid, target = ((102, "pve2"), (101, "pve3"), (105, "pve3"))[i % 3]
                self._record("check", c.get(f"/v1/vms/{vmid}/check", params={"target": target}))
                i += 1

    def _vetoes(self) -> None:
        with httpx.Client(base_url=self.base, headers=AUTH, timeout=10) as c:
            while not self.stop.is_set():
                body = {"vmid": 101, "target": "pve3", "source": "pve1"}
                self._record("decision", c.post("/v1/decisions", json=body))
                time.sleep(0.05)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def since(self, mark: int) -> list[tuple[str, int, dict]]:
        with self.lock:
            return list(self.answers[mark:])

    def mark(self) -> int:
        with self.lock:
            return len(self.answers)


def test_redis_stopped_and_restarted_under_load_no_500_and_every_veto_published_once(pve):
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary")
    redis_port = free_port()
    redis_proc = start_redis(redis_port)
    service = None
    try:
        # VM facts and lists expire at once: every check during the outage is read from Proxmox
        service, base = start_service(
            pve, redis_url=f"redis://127.0.0.1:{redis_port}/0", cache_vm_ttl="0", cache_list_ttl="0"
        )
        stream = redis_sync.Redis(port=redis_port)
        with Load(base) as load:
            wait_until(lambda: len(load.since(0)) >= 10, 20, "the first answers", service)
            before = load.since(0)
            published = [b["decision_id"] for k, s, b in before if k == "decision"]
            wait_until(lambda: stream.xlen(EVENTS_STREAM) >= len(published), 10, "vetoes on the stream")

            redis_proc.kill()
            redis_proc.wait()
            outage_mark = load.mark()
            proxmox_before = pve.request_count()
            ready = wait_until(
                lambda: (r := httpx.get(base + "/readyz", timeout=5).json())["redis"] == "down" and r,
                10,
                "/readyz to report Redis down",
                service,
            )
            assert ready["status"] == "degraded" and ready["degraded"] is True and ready["proxmox"] == "ok"
            wait_until(
                lambda: sum(1 for k, _, _ in load.since(outage_mark) if k == "decision") >= 8,
                20,
                "vetoes during the outage",
                service,
            )
            assert pve.request_count() > proxmox_before  # answers came straight from Proxmox
            during = load.since(outage_mark)

            redis_proc = start_redis(redis_port)
            wait_until(
                lambda: httpx.get(base + "/readyz", timeout=5).json()["status"] == "ready",
                15,
                "/readyz to be ready again",
                service,
            )
            wait_until(
                lambda: httpx.get(base + "/readyz", timeout=5).json()["events_pending"] == 0,
                15,
                "the queued events to be written",
                service,
            )
            after_mark = load.mark()
            wait_until(lambda: len(load.since(after_mark)) >= 6, 10, "answers after the restart", service)
        everything = load.since(0)

        statuses = {s for _, s, _ in everything}
        assert statuses == {200}, sorted(statuses)
        assert {b["verdict"] for k, _, b in everything if k == "decision"} == {"deny"}
        # the same verdict for each VM before, during and after the outage
        verdicts = {(b["vmid"], b["verdict"]) for k, _, b in everything if k == "check"}
        assert len(verdicts) == 3 and {(102, "allow"), (101, "deny")} <= verdicts, verdicts
        queued = [b["decision_id"] for k, _, b in during if k == "decision" and b.get("event_queued")]
        assert len(queued) >= 5, "vetoes made while Redis was down must say they were queued"
        # the restarted Redis is empty (no persistence): what it holds was written after the restart,
        # and every veto queued during the outage is there exactly once, oldest first
        ids = [json.loads(f[b"event"])["id"] for _, f in stream.xrange(EVENTS_STREAM)]
        assert len(ids) == len(set(ids)), "an event was published twice"
        assert [i for i in ids if i in set(queued)] == queued
        assert ids == sorted(ids)
        later = [b["decision_id"] for k, _, b in load.since(after_mark) if k == "decision"]
        assert set(later) <= set(ids)
        # the audit log is whole again: the outage's decisions are in GET /v1/decisions
        recent = httpx.get(base + "/v1/decisions", params={"limit": 1000}, headers=AUTH).json()
        assert set(queued) <= {d["id"] for d in recent["decisions"]}
        assert "Traceback" not in service.stderr()
    finally:
        if service is not None:
            service.stop()
        redis_proc.kill()
        redis_proc.wait()
