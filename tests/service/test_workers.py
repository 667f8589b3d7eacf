"""More than one service process on one Redis: ``serve --workers 2`` and two separate ``serve``
instances. A burst of hook decisions spread over the processes (each on a new connection, the
hook's way) still makes at most one Proxmox read per resource between them: the cache's single
flight holds across processes (a short Redis lock per key; the others wait for the value in the
store), and so does the node-wide VM status read. Counted by the Proxmox-shaped test server."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import httpx
import pytest

from migration_guard.demo.pve_server import start_server
from tests.support.e2e import Proc, base_env, cli_argv, free_port, wait_until
from tests.support.redis_server import redis_url
from tests.support.service_stack import flushed_redis

pytestmark = pytest.mark.integration

SCENARIO = json.loads((Path(__file__).parents[1] / "fixtures" / "service" / "scenario.json").read_text())
TOKEN = "workers-test-token"
#: every VM of pve1, each asked about by several hooks at once toward two targets
VMS = (101, 102, 103, 104, 105, 106)


@pytest.fixture
def pve():
    server = start_server(json.loads(json.dumps(SCENARIO)))
    yield server
    server.stop()


def _env(pve, db_url: str, port: int, state_dir: Path) -> dict:
    tok = pve.token
    return base_env(
        MIGRATION_GUARD_PVE_HOST=pve.host_port,
        MIGRATION_GUARD_PVE_USER=tok["user"],
        MIGRATION_GUARD_PVE_TOKEN_NAME=tok["name"],
        MIGRATION_GUARD_PVE_TOKEN_VALUE=tok["value"],
        MIGRATION_GUARD_PVE_VERIFY_SSL=pve.ca_path,
        MIGRATION_GUARD_API_TOKENS=TOKEN,
        MIGRATION_GUARD_PVE_CLUSTER_NAME="lab",
        MIGRATION_GUARD_PVE_TIMEOUT="5",
        MIGRATION_GUARD_CACHE_LIST_TTL="120",  # no refresh round inside the test
        MIGRATION_GUARD_LISTEN=f"127.0.0.1:{port}",
        MIGRATION_GUARD_REDIS_URL=db_url,
        MIGRATION_GUARD_STATE_DIR=str(state_dir),
    )


def _up(base: str) -> bool:
    """Up (the inventory is read before a process listens); /healthz asks Proxmox nothing."""
    try:
        return httpx.get(base + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def _burst(bases: list[str], repeat: int) -> list[dict]:
    """``repeat`` decisions per VM and target, all at once, each on its own connection, spread
    over ``bases`` in turn."""

    async def one(i: int, vmid: int, target: str) -> dict:
        async with httpx.AsyncClient(base_url=bases[i % len(bases)], timeout=30) as c:
            answer = await c.post(
                "/v1/decisions",
                json={"vmid": vmid, "target": target, "source": "pve1"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert answer.status_code == 200, answer.text
            return answer.json()

    asks = [(vmid, target) for vmid in VMS for target in ("pve2", "pve3") for _ in range(repeat)]
    return await asyncio.gather(*(one(i, vmid, target) for i, (vmid, target) in enumerate(asks)))


def _assert_one_read_per_path(pve, answers: list[dict]) -> None:
    counts = pve.requests()
    assert {a["verdict"] for a in answers} <= {"allow", "deny"}
    # the same VM and target answer the same whichever process answered
    by_pair: dict[tuple, set] = {}
    for a in answers:
        by_pair.setdefault((a["vmid"], a["target"]), set()).add(a["verdict"])
    assert all(len(v) == 1 for v in by_pair.values()), by_pair
    vm_reads = [p for p in counts if "/qemu/" in p]
    assert any(p.endswith(f"/qemu/{VMS[0]}/pending") or f"/qemu/{VMS[0]}/" in p for p in vm_reads), counts
    twice = {path: n for path, n in counts.items() if n > 1}
    assert not twice, f"read more than once by the processes together: {twice} (all: {counts})"


def test_two_workers_make_one_proxmox_read_per_resource(pve, tmp_path):
    url = redis_url(11)
    flushed_redis(url)
    port = free_port()
    pve.set_faults(latency_s=0.2)  # reads overlap: every process asks while another reads
    proc = Proc("workers", cli_argv("serve", "--workers", "2"), _env(pve, url, port, tmp_path))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(base), 60, "the two workers' /healthz", proc)
        answers = asyncio.run(_burst([base], repeat=4))
    finally:
        proc.popen.terminate()
        proc.popen.wait(20)
    assert "2 worker processes" in proc.stderr() or "Started parent process" in proc.stderr(), proc.stderr()[
        -2000:
    ]
    _assert_one_read_per_path(pve, answers)
    proc.stop()


def test_two_instances_on_one_redis_make_one_proxmox_read_per_resource(pve, tmp_path):
    url = redis_url(12)
    flushed_redis(url)
    pve.set_faults(latency_s=0.2)
    ports = [free_port(), free_port()]
    procs = [
        Proc(f"instance{i}", cli_argv("serve"), _env(pve, url, port, tmp_path / f"state{i}"))
        for i, port in enumerate(ports)
    ]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for base, proc in zip(bases, procs, strict=True):
            wait_until(lambda base=base: _up(base), 60, f"{base}/healthz", proc)
        answers = asyncio.run(_burst(bases, repeat=4))
        # each instance answered half of them, and both recorded into the one decision log
        with httpx.Client(timeout=10) as c:
            logged = c.get(
                bases[0] + "/v1/decisions",
                params={"limit": 1000},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
        assert len(logged.json()["decisions"]) == len(answers)
    finally:
        for proc in procs:
            proc.popen.terminate()
        for proc in procs:
            proc.popen.wait(20)
    _assert_one_read_per_path(pve, answers)
    for proc in procs:
        proc.stop()


def test_workers_without_redis_stop_start_up_with_one_line(pve, tmp_path):
    env = _env(pve, "memory://", free_port(), tmp_path)
    done = subprocess.run(
        cli_argv("serve", "--workers", "2"), env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "--workers 2 needs Redis" in done.stderr and "Traceback" not in done.stderr
