"""HA's CRM retries a vetoed migration every round (~10 s) while the source node is in maintenance:
the service counts the vetoes of one VM toward one target in a row, the hook line of a repeat says
what to do, and the veto event carries the running count the Slack message shows."""

from __future__ import annotations

import asyncio

import pytest

from migration_guard.service.decisions import REPEAT_WINDOW_S
from migration_guard.service.guard import GuardService
from migration_guard.store.redis_store import Store, connect
from tests.fakes.pve import pve_server, reader_for
from tests.support.service_stack import settings_for
from tests.system.test_kvm_view_e2e import scenario

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_service(server, clock: Clock, redis_url: str = "") -> GuardService:
    settings = settings_for(
        server, api_tokens="t", pve_cluster_name="lab", redis_url=redis_url, pve_timeout=2
    )
    client, kind = connect(redis_url)
    return GuardService(settings, reader_for(server), Store(client, kind), clock=clock)


def decide(
    service: GuardService,
    mode: str = "enforce",
    vmid: int = 205,
    source: str = "pve-sky1",
    target: str = "pve-atom",
) -> dict:
    request = {"vmid": vmid, "target": target, "source": source, "mode": mode}
    return asyncio.run(service.decide(request)).body


@pytest.fixture(scope="module")
def server():
    with pve_server(scenario()) as s:
        yield s


def test_repeats_are_counted_and_the_line_says_what_to_do(server):
    clock = Clock(1_780_000_000.0)  # 2026-05-28T20:26:40Z
    service = make_service(server, clock)
    lines = []
    for _ in range(3):
        lines.append(decide(service)["line"])
        clock.now += 10
    head = "blocked migration of VM 205 (vm205) from pve-sky1 to pve-atom: "
    assert all(line.startswith(head) for line in lines)
    assert "times since" not in lines[0]
    assert lines[1].endswith(
        "; blocked 2 times since 20:26 UTC; HA retries until pve-sky1 leaves maintenance or the CPU "
        "type changes: set a CPU type both nodes run and restart the VM, or migrate it by hand to a node "
        "that runs it"
    )
    assert "; blocked 3 times since 20:26 UTC; " in lines[2]
    events = asyncio.run(service.events.recent(10, 205))
    assert [d["line"] for d in reversed(events)] == lines  # every decision recorded, with its line


def test_a_quiet_gap_starts_the_count_anew(server, monkeypatch):
    """Redis: the run's key expires REPEAT_WINDOW_S after the last veto (real time)."""
    from migration_guard.service import decisions
    from tests.support.redis_server import redis_url
    from tests.support.service_stack import flushed_redis

    url = redis_url(14)
    flushed_redis(url)
    monkeypatch.setattr(decisions, "REPEAT_WINDOW_S", 0.3)  # the run's key expires in Redis
    clock = Clock(1_780_000_000.0)
    service = make_service(server, clock, url)
    request = {"vmid": 205, "target": "pve-atom", "source": "pve-sky1", "mode": "enforce"}

    async def three() -> list[str]:  # one event loop: the Redis connections belong to it
        lines = [(await service.decide(dict(request))).body["line"]]
        clock.now += 10
        lines.append((await service.decide(dict(request))).body["line"])
        await asyncio.sleep(0.5)
        clock.now += REPEAT_WINDOW_S + 1
        lines.append((await service.decide(dict(request))).body["line"])
        await service.close()
        return lines

    first, second, third = asyncio.run(three())
    assert "times since" not in first
    assert "blocked 2 times" in second
    assert "times since" not in third


def test_embedded_store_counts_in_the_process_with_the_same_gap(server):
    """The embedded store lives and dies with the process: the count is kept there, by the
    service's clock, with the same window."""
    clock = Clock(1_780_000_000.0)
    service = make_service(server, clock)
    assert service.store.kind == "embedded"
    decide(service)
    clock.now += REPEAT_WINDOW_S - 1
    assert "blocked 2 times" in decide(service)["line"]
    clock.now += REPEAT_WINDOW_S + 1
    assert "times since" not in decide(service)["line"]


def test_warn_mode_vetoes_nothing_and_counts_nothing(server):
    service = make_service(server, Clock(1_780_000_000.0))
    assert all("times since" not in decide(service, "warn")["line"] for _ in range(3))


def test_with_redis_down_the_count_is_kept_in_memory(server):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    clock = Clock(1_780_000_000.0)
    service = make_service(server, clock, redis_url=f"redis://127.0.0.1:{port}/0")
    first = decide(service)
    clock.now += 10
    second = decide(service)
    assert first["recorded"] is False and "times since" not in first["line"]
    assert "; blocked 2 times since 20:26 UTC; HA retries until pve-sky1 leaves maintenance" in second["line"]


def test_what_to_do_comes_before_a_nested_note(server):
    clock = Clock(1_780_000_000.0)
    service = make_service(server, clock)
    decide(service, vmid=203, source="pve-epyc", target="pve-nested")
    clock.now += 10
    line = decide(service, vmid=203, source="pve-epyc", target="pve-nested")["line"]
    assert line.index("lacks") < line.index("blocked 2 times") < line.index("note: pve-nested is itself")
