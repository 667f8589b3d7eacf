"""``migration-guard cpu baseline`` on host files (no service), and ``cpu migrate`` judging the
guest's physical address width against the target's (the host files' ``address sizes``)."""

from __future__ import annotations

import json
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from migration_guard.engine.cpu_spec import parse_custom_models

REPO = Path(__file__).resolve().parents[2]
EXE = REPO / ".venv" / "bin" / "migration-guard"
CPUS = resources.files("migration_guard").joinpath("data", "cpus")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not EXE.exists(), reason="the project is not installed in .venv"),
]


def host(tmp_path: Path, ref: str, name: str) -> str:
    data = json.loads(CPUS.joinpath(f"{ref}.json").read_text())
    data["name"] = name
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=60)


def test_baseline_prints_the_section_and_what_it_left_out(tmp_path):
    a = host(tmp_path, "intel-cascadelake-sp-gold-6230", "pve-csl")
    b = host(tmp_path, "intel-kabylake-r-core-i7-8650u", "pve-i7")
    proc = run("cpu", "baseline", "--host", a, "--host", b, "--name", "lab")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("Custom CPU model custom-lab for pve-csl, pve-i7:")
    assert "phys-bits 39" in out and "left out" in out and "invtsc" in out and "unmigratable" in out
    section = out[out.index("cpu-model: lab") :] + "\n"
    model = parse_custom_models(section)["lab"]
    assert model.phys_bits == "39" and "invtsc" not in dict(model.flags)


def test_baseline_json_and_bad_input(tmp_path):
    a = host(tmp_path, "intel-cascadelake-sp-gold-6230", "pve-csl")
    proc = run("cpu", "baseline", "--host", a, "--json")
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert body["nodes"] == ["pve-csl"] and body["phys_bits"] == 46
    both = run("cpu", "baseline", "--host", a, "--cluster")
    assert both.returncode == 2 and "either as --host FILE" in both.stderr
    apply = run("cpu", "baseline", "--host", a, "--apply")
    assert apply.returncode == 2 and "--apply" in apply.stderr and "Traceback" not in apply.stderr
    bad = run("cpu", "baseline", "--cluster", "--name", "9bad name", "--url", "http://127.0.0.1:9")
    assert bad.returncode == 3 and "Traceback" not in bad.stderr  # unreachable service: one line


def test_migrate_denies_a_wider_guest_and_notes_an_unknown_width(tmp_path):
    csl = host(tmp_path, "intel-cascadelake-sp-gold-6230", "pve-csl")
    i7 = host(tmp_path, "intel-kabylake-r-core-i7-8650u", "pve-i7")
    atom = host(tmp_path, "intel-denverton-atom-c3758", "pve-atom")
    cpu = "x86-64-v2-AES,phys-bits=host"
    denied = run("cpu", "migrate", "--cpu", cpu, "--source", csl, "--target", i7, "--json")
    assert denied.returncode == 1
    body = json.loads(denied.stdout)
    assert body["verdict"] == "deny" and body["reasons"][-1]["code"] == "phys-bits"
    noted = run("cpu", "migrate", "--cpu", cpu, "--source", csl, "--target", atom, "--json")
    assert noted.returncode == 0
    assert [r["code"] for r in json.loads(noted.stdout)["reasons"]] == ["phys-bits-unknown"]
