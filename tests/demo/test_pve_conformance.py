"""The Proxmox-shaped test server (shared/migration_guard/demo/pve_server.py) answers as Proxmox VE 9.2 does:
one
test per behaviour, each naming the Proxmox source it follows (qemu-server 9.2.6, pve-manager
9.2.11, pve-http-server 6.0.5). Raw HTTPS, no project code between the test and the server."""

from __future__ import annotations

import ast
import copy
import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from migration_guard.demo.pve_server import start_server
from tests.service.test_service_integration import SCENARIO


def cluster() -> dict:
    sc = copy.deepcopy(SCENARIO)
    vm = next(v for v in sc["vms"] if v["vmid"] == 103)  # running, cpu: host
    vm["pending"] = {"cpu": "x86-64-v2-AES", "tags": None}
    vm.setdefault("config", {})["tags"] = "db"
    for node in sc["nodes"]:
        if node["name"] == "pve2":
            node["machine_revisions"] = {"9.2": 0}
    return sc


@pytest.fixture(scope="module")
def pve():
    # Proxmox's own delays: 3 s for a wrong token; the proxy timeout short enough for a test
    server = start_server(cluster(), auth_failure_delay_s=3.0, proxy_timeout_s=1.0)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clean(pve):
    pve.set_faults()
    yield
    pve.set_faults()


def get(pve, path: str, token: str | None = None, timeout: float = 10) -> tuple[int, bytes, float]:
    tok = pve.token
    header = token or f"PVEAPIToken={tok['user']}!{tok['name']}={tok['value']}"
    request = urllib.request.Request(f"{pve.url}/api2/json{path}", headers={"Authorization": header})
    context = ssl.create_default_context(cafile=pve.ca_path)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout) as answer:
            return answer.status, answer.read(), time.monotonic() - started
    except urllib.error.HTTPError as err:
        return err.code, err.read(), time.monotonic() - started


def data(pve, path: str):
    status, raw, _ = get(pve, path)
    assert status == 200, (path, status, raw)
    return json.loads(raw)["data"]


def test_config_applies_pending_changes_unless_current(pve):
    """qemu-server PVE/API2/Qemu.pm ``vm_config``: pending values applied, pending deletes
    removed, unless ``current=1``."""
    applied = data(pve, "/nodes/pve1/qemu/103/config")
    assert applied["cpu"] == "x86-64-v2-AES" and "tags" not in applied
    current = data(pve, "/nodes/pve1/qemu/103/config?current=1")
    assert current["cpu"] == "host" and current["tags"] == "db"


def test_pending_lists_current_and_pending_values(pve):
    """qemu-server PVE/API2/Qemu.pm ``vm_pending`` -> pve-guest-common
    PVE::GuestHelpers::config_with_pending_array: ``value`` current, ``pending``, ``delete``."""
    rows = {r["key"]: r for r in data(pve, "/nodes/pve1/qemu/103/pending")}
    assert rows["cpu"] == {"key": "cpu", "value": "host", "pending": "x86-64-v2-AES"}
    assert rows["tags"] == {"key": "tags", "value": "db", "delete": 1}
    assert "pending" not in rows["name"]


def test_running_machine_is_missing_while_qmp_is_busy(pve):
    """qemu-server PVE/QemuServer.pm ``vmstatus``: running-machine / running-qemu come from QMP
    with a short timeout and are left out when it does not answer."""
    assert data(pve, "/nodes/pve1/qemu/102/status/current")["running-machine"].startswith("pc-")
    pve.set_faults(qmp_busy=["102"])
    busy = data(pve, "/nodes/pve1/qemu/102/status/current")
    assert busy["status"] == "running"
    assert "running-machine" not in busy and "running-qemu" not in busy


def test_machine_types_list_every_version_and_the_pve_revisions(pve):
    """qemu-server PVE/API2/Qemu/Machine.pm ``types`` with $PVE_MACHINE_VERSION of
    PVE/QemuServer/Machine.pm: every QEMU machine version, "+pveN" per known revision, newest first."""
    ids = [m["id"] for m in data(pve, "/nodes/pve1/capabilities/qemu/machines")]
    assert ids[0] == "pc-q35-9.2+pve1" and "pc-q35-9.2" in ids and "pc-i440fx-4.1+pve2" in ids
    assert "pc-q35-8.1" in ids and not any(i.startswith("pc-q35-10.") for i in ids)
    older = [m["id"] for m in data(pve, "/nodes/pve2/capabilities/qemu/machines")]
    assert "pc-q35-9.2" in older and "pc-q35-9.2+pve1" not in older  # an older qemu-server


def test_powered_off_node_still_listed_online_hangs_behind_the_proxy(pve):
    """pve-manager PVE/API2/Nodes.pm calls are ``proxyto => 'node'``; pveproxy (pve-http-server
    PVE/APIServer/AnyEvent.pm) waits for the node up to its timeout (30 s; 1 s here), then 595."""
    pve.set_faults(powered_off=["pve2"])
    nodes = {n["node"]: n["status"] for n in data(pve, "/nodes")}
    assert nodes["pve2"] == "online"
    status, raw, took = get(pve, "/nodes/pve2/status")
    assert status == 595 and took >= 1.0, (status, took)
    assert json.loads(raw)["data"] is None


def test_wrong_token_is_401_with_an_empty_body_after_3_s(pve):
    """pve-http-server PVE/APIServer/AnyEvent.pm: a failed authentication is answered after a
    3 s delay, 401, no body; a client with a shorter timeout sees a timeout."""
    status, raw, took = get(pve, "/nodes", token="PVEAPIToken=guard@pve!check=wrong")
    assert status == 401 and raw == b"" and took >= 3.0, (status, raw, took)


def test_error_body_carries_data_null_message_and_errors(pve):
    """pve-http-server PVE/APIServer/Formatter/Standard.pm: ``data`` null, ``message``, and
    ``errors`` for a parameter error."""
    status, raw, _ = get(pve, "/nodes/pve1/qemu/999/config")
    body = json.loads(raw)
    assert status == 500 and body["data"] is None and "does not exist" in body["message"]
    status, raw, _ = get(pve, "/nodes/pve1/qemu/abc/config")
    body = json.loads(raw)
    assert status == 400 and body["data"] is None
    assert body["message"].startswith("Parameter verification failed") and "vmid" in body["errors"]


def test_cpu_flags_as_pve_manager_builds_them(pve):
    """pve-manager PVE/API2/Cluster/Qemu/CPUFlags.pm -> qemu-server PVE/QemuServer/CPUFlags.pm
    ``query_available_cpu_flags``: nested-virt first, then flags some node offers, then flags no
    node offers (``supported-on`` []), by name; ``description`` where qemu-server has one."""
    rows = data(pve, "/cluster/qemu/cpu-flags")
    assert rows[0]["name"] == "nested-virt" and rows[0]["description"]
    offered = [r for r in rows[1:] if r["supported-on"]]
    nowhere = [r for r in rows[1:] if not r["supported-on"]]
    assert rows[1:] == offered + nowhere
    assert [r["name"] for r in offered] == sorted(r["name"] for r in offered)
    by_name = {r["name"]: r for r in rows}
    assert "description" in by_name["md-clear"] and "description" not in by_name["avx2"]
    assert all(isinstance(r["supported-on"], list) for r in rows)


def test_cpu_flags_is_501_before_pve_manager_9_1_15():
    """The endpoint arrived with pve-manager 9.1.15; older releases answer 501."""
    with start_server(dict(cluster(), pve_version="9.1.14")) as old:
        assert get(old, "/cluster/qemu/cpu-flags")[0] == 501
    with start_server(dict(cluster(), pve_version="9.1.15")) as new:
        assert get(new, "/cluster/qemu/cpu-flags")[0] == 200


@pytest.mark.parametrize(
    "kind, starts",
    [
        ("html", b"<html>"),
        ("truncated", b'{"data":{'),
        ("null", b'{"data":null}'),
        ("list", b'{"data":[]}'),
        ("string", b'{"data":"ok"}'),
        ("nodata", b'{"success":1}'),
    ],
)
def test_fault_injection_for_hostile_200_answers(pve, kind, starts):
    """Not Proxmox: what a proxy or a cut connection gives, for the reader's tests."""
    pve.set_faults(bad_answer=kind, paths=["/nodes/pve1/status"])
    status, raw, _ = get(pve, "/nodes/pve1/status")
    assert status == 200 and raw.startswith(starts)
    assert get(pve, "/nodes/pve2/status")[0] == 200  # only the paths named


def test_cpu_flags_of_a_node_come_from_its_recorded_kvm_expansion():
    """pvestatd stores the QMP host expansion in the node's ``cpuflags-kvm`` entry (names
    normalised), and ``query_available_cpu_flags`` lists that node under each of its flags. The
    test server reads real recordings (shared/migration_guard/data/kvm_expansions, each naming its source)."""
    sc = cluster()
    sc["nodes"][0]["kvm_ref"] = "intel-skylake-sp-gold-6130"
    sc["nodes"][3]["kvm_ref"] = "amd-zen1-epyc-7601"
    intel, amd = sc["nodes"][0]["name"], sc["nodes"][3]["name"]
    with start_server(sc) as server:
        on = {r["name"]: set(r["supported-on"]) for r in data(server, "/cluster/qemu/cpu-flags")}
    assert intel in on["avx512f"] and amd not in on["avx512f"]
    assert amd in on["sha-ni"] and intel not in on["sha-ni"]
    assert {intel, amd} <= on["sse4-2"] and {intel, amd} <= on["lahf-lm"]  # spelled as QEMU does
    assert intel in on["nested-virt"] and intel in on["vmx"]  # vmx recorded on the Intel host
    assert "sse4_2" not in on and "check" not in on and "i64" not in on


def test_a_node_without_a_kvm_report_is_in_no_supported_on(pve):
    """pvestatd broadcasts an empty ``cpuflags-kvm`` entry when its flag detection fails (pve-manager
    PVE/Service/pvestatd.pm ``update_supported_cpuflags``), and ``query_available_cpu_flags`` only
    walks the nodes whose entry names flags: such a node appears under no flag, while every
    recognised flag is still listed. Here pve4 has no recording, pve1-pve3 have one."""
    rows = data(pve, "/cluster/qemu/cpu-flags")
    named = {node for r in rows for node in r["supported-on"]}
    assert named == {"pve1", "pve2", "pve3"}  # pve5 (a recording, but offline) is left out too
    by_name = {r["name"]: r["supported-on"] for r in rows}
    assert by_name["sse4a"] == [] and by_name["avx512f"] == ["pve1", "pve2"]  # sse4a: AMD recordings


#: the project's engine: what the guard judges with, which the test server must never use
ENGINE_MODULES = frozenset({"engine", "checks", "cpu_models", "hosts", "flags"})


def engine_imports(source: str) -> list[str]:
    """Every import of an engine module in ``source``, at any depth (function-level included),
    absolute (``migration_guard.engine.verdicts``) or relative (``from . import engine``, ``from .hosts
    import``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names = [base] + [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if ENGINE_MODULES & set(name.split(".")):
                found.append(f"line {node.lineno}: {name}")
    return found


def test_engine_imports_are_found_at_any_depth():
    """The check below would catch the import it is there to forbid."""
    src = "import json\ndef f():\n    from . import engine\n    from .hosts import HostCpu\n"
    assert engine_imports(src) == ["line 3: engine", "line 4: hosts", "line 4: hosts.HostCpu"]
    assert engine_imports("import migration_guard.engine.checks\n")
    assert engine_imports("from migration_guard.engine import flags\n")
    assert not engine_imports("from .errors import ConfigError\nimport json\n")


def test_the_test_server_imports_nothing_of_the_engine():
    """Its answers come from recorded data only, never from what it is there to test (every module
    of the test server: the server, its scenario, its routes, its KVM recordings)."""
    demo = Path(__file__).resolve().parents[2].joinpath("shared", "migration_guard", "demo")
    modules = sorted(demo.glob("pve_*.py"))
    assert {m.name for m in modules} >= {"pve_server.py", "pve_scenario.py", "pve_kvm.py"}
    assert {m.name: engine_imports(m.read_text()) for m in modules} == {m.name: [] for m in modules}
