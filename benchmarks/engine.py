"""Engine speed: verdicts per second for 10,000 VM specs against 64 hosts.

Run: .venv/bin/python benchmarks/engine.py [--specs N] [--hosts N] [--catalog FILE]
Prints verdicts/s for check_runnable (full verdicts with reasons) and for the boolean batch
path runnable_matrix. Goal: >= 1,000,000 (spec, host) verdicts per second on one core.
Hosts come from the real CPU fixtures (shared/migration_guard/data/cpus, plus the folder of extra dumps that
MIGRATION_GUARD_TEST_EXTRA_CPUS names, when set),
varied by dropping flags so that all 64 differ.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from migration_guard.engine import cpu_models  # noqa: E402
from migration_guard.engine import verdicts as engine  # noqa: E402
from migration_guard.engine.cpu_spec import parse_cpu  # noqa: E402
from migration_guard.engine.hosts import HostCpu, host_from_json  # noqa: E402

VM_FLAGS = [
    "+pcid",
    "+spec-ctrl",
    "+ssbd",
    "+ibpb",
    "+md-clear",
    "+aes",
    "+pdpe1gb",
    "-pcid",
    "+nested-virt",
    "+virt-ssbd",
    "+amd-ssbd",
    "-aes",
]


def real_hosts() -> list[HostCpu]:
    hosts = []
    extra = os.environ.get("MIGRATION_GUARD_TEST_EXTRA_CPUS", "").strip()
    for folder in (REPO / "shared" / "migration_guard" / "data" / "cpus", Path(extra) if extra else None):
        if folder is not None and folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                hosts.append(host_from_json(json.loads(path.read_text()), path.stem))
    if not hosts:
        sys.exit(
            "no real CPU fixtures found in shared/migration_guard/data/cpus (nor in "
            "MIGRATION_GUARD_TEST_EXTRA_CPUS)"
        )
    return hosts


def make_hosts(count: int, rng: random.Random) -> list[HostCpu]:
    base = real_hosts()
    hosts = []
    for i in range(count):
        h = base[i % len(base)]
        flags = h.flags
        if i >= len(base):
            drop = set(rng.sample(sorted(flags), k=min(3, len(flags) - 1)))
            flags = flags - drop
        hosts.append(
            HostCpu(
                name=f"node{i:02d}",
                vendor=h.vendor,
                model=h.model,
                flags=flags,
                bugs=h.bugs,
                family=h.family,
                model_number=h.model_number,
            )
        )
    return hosts


def make_specs(count: int, rng: random.Random) -> list:
    cat = cpu_models.catalog()
    names = [n for n in cat.names()]
    texts = []
    for _ in range(count):
        name = rng.choice(names)
        if rng.random() < 0.3:
            flags = ";".join(rng.sample(VM_FLAGS, k=rng.randint(1, 3)))
            texts.append(f"{name},flags={flags}")
        else:
            texts.append(name)
    return [parse_cpu(t) for t in texts]


def rate(label: str, pairs: int, seconds: float) -> None:
    print(f"{label:<46} {pairs:>9,} verdicts in {seconds:6.3f} s = {pairs / seconds:>12,.0f} verdicts/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--catalog", help="a cpu_models.json to use instead of the packaged one")
    args = parser.parse_args()
    if args.catalog:
        cat = cpu_models.load_catalog(Path(args.catalog).read_text())
        cpu_models.catalog = lambda: cat
    rng = random.Random(42)
    hosts = make_hosts(args.hosts, rng)
    specs = make_specs(args.specs, rng)
    pairs = len(specs) * len(hosts)
    from migration_guard.engine.offers import requirement

    distinct_reqs = len({requirement(s) for s in specs})
    print(
        f"{len(specs):,} specs ({len(set(specs)):,} distinct specs, {distinct_reqs:,} distinct requirements: "
        f"what the batch path computes a row for) x {len(hosts)} hosts, "
        f"{len(cpu_models.catalog().models)} catalog types"
    )

    engine.clear_caches()
    start = time.perf_counter()
    matrix = engine.runnable_matrix(specs, hosts)
    rate("runnable_matrix (cold caches)", pairs, time.perf_counter() - start)
    # warm, alternating with its anchor (a Python loop touching every pair once: the floor of
    # any per-pair work in Python), medians of 5 rounds
    warm, floor = [], []
    for _ in range(5):
        start = time.perf_counter()
        matrix = engine.runnable_matrix(specs, hosts)
        warm.append(time.perf_counter() - start)
        start = time.perf_counter()
        touched = sum(1 for _s in specs for _h in hosts)
        floor.append(time.perf_counter() - start)
    rate("runnable_matrix (warm, median of 5)", pairs, statistics.median(warm))
    rate("anchor: a bare loop over the pairs (median)", touched, statistics.median(floor))
    runnable = sum(sum(row) for row in matrix)

    check = engine.check_runnable
    for label in ("check_runnable (first pass)", "check_runnable (repeat pass, shared verdicts)"):
        start = time.perf_counter()
        count = 0
        for s in specs:
            for h in hosts:
                check(s, h)
                count += 1
        rate(label, count, time.perf_counter() - start)
    print(f"runnable pairs: {runnable:,} of {pairs:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
