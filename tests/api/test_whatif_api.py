"""What if, over the demo cluster (the Proxmox-shaped test server, proxmoxer, the real service served
by uvicorn): GET /v1/cpus, /v1/cluster/recommendation with add=/remove= (and its POST form with
host data), their documented shapes, their errors, and ``migration-guard recommend`` / ``cpu list``
as subprocesses against the same service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from migration_guard.api.app import create_app
from migration_guard.api.models.whatif import CpusBody, RecommendationWhatIfBody
from migration_guard.demo.stack import start_demo
from migration_guard.engine.cpus import find_cpu
from migration_guard.service.guard import build_service
from tests.api.test_openapi import conforms
from tests.support.service_stack import serving

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "whatif-token-0123456789abcdef01234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REC = "/v1/cluster/recommendation"


@pytest.fixture(scope="module")
def demo():
    running = start_demo(None, api_tokens=TOKEN, redis_url="")
    try:
        service = build_service(running.settings)
        with serving(create_app(service, (TOKEN,))) as url, httpx.Client(base_url=url, headers=AUTH) as c:
            c.url = url  # type: ignore[attr-defined]
            yield c
    finally:
        running.stop()


def what_if(demo, **params) -> dict:
    answer = demo.get(REC, params=params)
    assert answer.status_code == 200, answer.text
    body = conforms(RecommendationWhatIfBody, answer.json())
    assert body.what_if is not None
    return answer.json()["what_if"]


def vmids(rows) -> list[int]:
    return [r["vmid"] for r in rows]


def test_cpus_lists_each_shipped_cpu_once_under_the_name_add_takes(demo):
    body = conforms(CpusBody, demo.get("/v1/cpus").json())
    names = [c.name for c in body.cpus]
    assert len(names) == len({n.lower() for n in names})
    assert {"EPYC 9654", "Xeon Gold 6230", "Atom C3758"} <= set(names)
    for cpu in body.cpus:  # every listed name (and id) finds that CPU, in any case
        assert find_cpu(cpu.name.upper()).id == cpu.id and find_cpu(cpu.id).id == cpu.id
    levels = {c.name: c.level for c in body.cpus}
    assert levels["EPYC 9654"] == "x86-64-v4" and levels["Atom C3758"] == "x86-64-v2-AES"


def test_without_add_or_remove_the_answer_is_the_old_one(demo):
    body = demo.get(REC).json()
    assert "what_if" not in body and body["recommended"] == "x86-64-v2-AES"


def test_retiring_the_atom_raises_the_baseline_and_frees_the_v3_vm(demo):
    block = what_if(demo, remove="pve-atom1")
    assert (block["recommended_before"], block["recommended_after"]) == ("x86-64-v2-AES", "x86-64-v3")
    assert block["removed"] == ["pve-atom1"] and "pve-atom1" not in block["nodes_after"]
    assert vmids(block["would_gain"]) == [103]  # db01 (x86-64-v3) ran everywhere but the Atom
    (dns,) = block["must_move"]  # VM 108 lives on the Atom
    assert dns["vmid"] == 108 and dns["can_move_to"] == ["pve-epyc1", "pve-xeon-bdw", "pve-xeon-csl"]
    assert block["would_break"] == []
    model = block["custom_model"]
    assert model["nodes"] == block["nodes_after"] and model["gains_over"]["level"] == "x86-64-v3"
    assert model["section"].startswith("cpu-model: ")


def test_an_old_opteron_breaks_the_vms_every_node_runs_today(demo):
    block = what_if(demo, add="opteron 6134")  # K10: no SSE4.2, so no x86-64-v2
    (added,) = block["added"]
    assert added["node"] == "new-opteron-6134" and added["vendor"] == "amd"
    assert block["recommended_after"] == "kvm64"
    broken = {r["vmid"]: r for r in block["would_break"]}
    assert set(broken) == {102, 108}  # the x86-64-v2-AES VMs; kvm64 (107) still runs everywhere
    for row in broken.values():
        (lacks,) = row["cannot_run_on"]
        assert lacks["node"] == "new-opteron-6134" and "sse4_2" in lacks["missing"]


def test_an_epyc_9654_node_names_the_vms_it_cannot_take_either(demo):
    block = what_if(demo, add="EPYC 9654")
    assert block["recommended_after"] == block["recommended_before"] == "x86-64-v2-AES"
    limited = {r["vmid"]: r["cannot_run_on"][0] for r in block["blocked_on_added"]}
    assert {"hle", "rtm"} <= set(limited[105]["missing"])  # Broadwell has TSX; Zen 4 has none


def test_host_data_asks_the_same_as_the_shipped_cpu_it_holds(demo):
    fixture = json.loads(
        (ROOT / "shared/migration_guard/data/cpus/intel-denverton-atom-c3758.json").read_text()
    )
    host = {"name": "atom2", "vendor": "intel", "model": fixture["model_name"], "flags": fixture["flags"]}
    posted = demo.post(REC, json={"hosts": [host], "remove": ["pve-epyc1"]})
    assert posted.status_code == 200, posted.text
    by_data = conforms(RecommendationWhatIfBody, posted.json()).model_dump()["what_if"]
    by_name = what_if(demo, add="Atom C3758", remove="pve-epyc1")
    assert by_data["added"][0]["node"] == "atom2"
    for key in ("recommended_after", "would_break", "would_gain"):
        assert by_data[key] == by_name[key], key
    assert vmids(by_data["must_move"]) == vmids(by_name["must_move"]) == [101, 106]


@pytest.mark.parametrize(
    ("params", "status", "code", "words"),
    [
        ({"add": "EPYC 9999"}, 422, "unknown-cpu", ["EPYC 9654", "EPYC 9754"]),
        ({"add": "xeon gold"}, 422, "unknown-cpu", ["Xeon Gold 6230", "Xeon Gold 6130"]),
        ({"remove": "pve-nope"}, 404, "unknown-node", ["pve-atom1", "pve-epyc1"]),
        ({"remove": "bad node!"}, 422, "bad-input", ["remove"]),
    ],
)
def test_a_wrong_name_says_which_names_exist(demo, params, status, code, words):
    answer = demo.get(REC, params=params)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["code"] == code
    assert all(w in error["message"] for w in words), error["message"]


def test_a_bad_host_is_refused_with_why(demo):
    answer = demo.post(REC, json={"hosts": [{"name": "x", "flags": []}]})
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "bad-input"
    answer = demo.post(REC, content=b"not json", headers={"Content-Type": "application/json"})
    assert answer.status_code == 422


# --- the command line --------------------------------------------------------------------------


def cli(*args: str, url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATION_GUARD_")}
    env.update(MIGRATION_GUARD_URL=url, MIGRATION_GUARD_TOKEN=TOKEN)
    return subprocess.run(
        [sys.executable, "-m", "migration_guard.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def test_cli_recommend_what_if_prints_the_change_and_exits_1_when_it_breaks(demo, tmp_path):
    retire = cli("recommend", "--remove", "pve-atom1", url=demo.url)
    assert retire.returncode == 0, retire.stderr
    assert "recommended after: x86-64-v3 (was x86-64-v2-AES)" in retire.stdout
    assert "must move first: VM 108 dns01 (x86-64-v2-AES) on pve-atom1 -> pve-epyc1" in retire.stdout
    opteron = cli("recommend", "--add", "Opteron 6134", "--json", url=demo.url)
    assert opteron.returncode == 1  # 102 and 108 would no longer run everywhere
    assert vmids(json.loads(opteron.stdout)["what_if"]["would_break"]) == [102, 108]
    host = tmp_path / "opteron.json"
    host.write_text(
        (ROOT / "shared/migration_guard/data/cpus/amd-k10-magnycours-opteron-6134.json").read_text()
    )
    by_file = cli("recommend", "--host", str(host), "--json", url=demo.url)
    assert by_file.returncode == 1, by_file.stderr
    assert vmids(json.loads(by_file.stdout)["what_if"]["would_break"]) == [102, 108]
    unknown = cli("recommend", "--add", "EPYC 9999", url=demo.url)
    assert unknown.returncode == 2 and "close names: EPYC 9754" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_cli_cpu_list_is_the_api_list(demo):
    listed = cli("cpu", "list", "--json", url=demo.url)
    assert listed.returncode == 0
    assert json.loads(listed.stdout) == demo.get("/v1/cpus").json()
    table = cli("cpu", "list", url=demo.url)
    assert "EPYC 9654" in table.stdout and "x86-64-v4" in table.stdout
