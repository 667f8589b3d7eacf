"""``migration-guard cpu ...`` as operators and CI run it: a subprocess, exit codes, JSON, stderr."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.extra_cpus import SKIP_REASON, extra_cpus_dir

REPO = Path(__file__).resolve().parents[2]
EXE = REPO / ".venv" / "bin" / "migration-guard"
REAL = extra_cpus_dir()

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (REPO / "shared" / "migration_guard" / "data" / "cpu_models.json").is_file(),
        reason="shared/migration_guard/data/cpu_models.json is not there yet",
    ),
    pytest.mark.skipif(not EXE.exists(), reason="the project is not installed in .venv"),
]

ZEN2 = {
    "name": "pve1",
    "vendor": "amd",
    "model": "AMD EPYC 7742 64-Core Processor",
    "flags": "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
    "sse sse2 "
    "ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid "
    "extd_apicid aperfmperf pni pclmulqdq monitor ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt "
    "aes xsave avx f16c rdrand lahf_lm cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse "
    "3dnowprefetch osvw ibs skinit wdt tce topoext perfctr_core perfctr_nb bpext perfctr_llc mwaitx "
    "cpb cat_l3 cdp_l3 hw_pstate ssbd mba ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 cqm "
    "rdt_a rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves cqm_llc "
    "cqm_occup_llc cqm_mbm_total cqm_mbm_local clzero irperf xsaveerptr wbnoinvd amd_ppin arat npt "
    "lbrv svm_lock nrip_save tsc_scale vmcb_clean flushbyasid decodeassists pausefilter pfthreshold "
    "avic v_vmsave_vmload vgif umip rdpid overflow_recov succor smca sme sev sev_es",
    "bugs": "sysret_ss_attrs spectre_v1 spectre_v2 spec_store_bypass retbleed smt_rsb srso",
}
SKX_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi "
    "mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon "
    "pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf pni pclmulqdq dtes64 monitor "
    "ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid dca sse4_1 sse4_2 x2apic movbe "
    "popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch cpuid_fault "
    "epb cat_l3 cdp_l3 invpcid_single pti intel_ppin ssbd mba ibrs ibpb stibp tpr_shadow vnmi "
    "flexpriority ept vpid ept_ad fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm "
    "cqm mpx rdt_a avx512f avx512dq rdseed adx smap clflushopt clwb intel_pt avx512cd avx512bw "
    "avx512vl xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local "
    "dtherm ida arat pln pts hwp hwp_act_window hwp_epp hwp_pkg_req pku ospke md_clear flush_l1d "
    "arch_capabilities"
)
SKX_CPUINFO = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\n"
    "model name\t: Intel(R) Xeon(R) Gold 6132 CPU @ 2.60GHz\n"
    f"flags\t\t: {SKX_FLAGS}\n"
    "bugs\t\t: cpu_meltdown spectre_v1 spectre_v2 spec_store_bypass l1tf mds swapgs taa itlb_multihit\n"
    "\nprocessor\t: 1\n"
)


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), "cpu", *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=REPO
    )


@pytest.fixture
def hosts(tmp_path: Path) -> dict[str, str]:
    zen2 = tmp_path / "zen2.json"
    zen2.write_text(json.dumps(ZEN2))
    skx = tmp_path / "pve3.cpuinfo"
    skx.write_text(SKX_CPUINFO)
    notsx = tmp_path / "pve4.json"
    flags = [f for f in SKX_FLAGS.split() if f not in ("hle", "rtm")]
    notsx.write_text(json.dumps({"vendor": "intel", "model": "Intel(R) Xeon(R) Gold 6132", "flags": flags}))
    return {"zen2": str(zen2), "skx": str(skx), "notsx": str(notsx)}


def one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0] and "Traceback" not in result.stderr


def test_check_json_one_entry_per_pair_and_exit_1_when_any_fails(hosts) -> None:
    result = run(
        "check",
        "--cpu",
        "x86-64-v4",
        "--cpu",
        "kvm64,flags=+pcid",
        "--host",
        hosts["zen2"],
        "--host",
        hosts["skx"],
        "--json",
    )
    assert result.returncode == 1, result.stderr
    entries = json.loads(result.stdout)
    assert [(e["cpu"], e["host"], e["runnable"]) for e in entries] == [
        ("x86-64-v4", "pve1", False),
        ("x86-64-v4", "pve3", True),
        ("kvm64,flags=+pcid", "pve1", False),
        ("kvm64,flags=+pcid", "pve3", True),
    ]
    assert all(set(e) == {"cpu", "host", "runnable", "missing", "model"} for e in entries)
    assert entries[0]["missing"] == ["avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512vl"]
    assert entries[2]["missing"] == ["pcid"] and entries[2]["model"] in ("kvm64", "kvm64-v1")


def test_check_exit_0_when_all_run_and_the_table_is_aligned(hosts) -> None:
    result = run("check", "--cpu", "x86-64-v2-AES", "--host", hosts["zen2"], "--host", hosts["skx"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["CPU", "HOST", "RESULT", "MODEL", "MISSING"]
    assert lines[1].index("pve1") == lines[0].index("HOST") == lines[2].index("pve3")


def test_check_reads_stdin(hosts) -> None:
    result = run("check", "--cpu", "Skylake-Server", "--host", "-", "--json", stdin=SKX_CPUINFO)
    entries = json.loads(result.stdout)
    assert (
        result.returncode == 0
        and entries[0]["host"] == "stdin"
        and entries[0]["model"] == "Skylake-Server-v1"
    )


def test_seed_skylake_server_denied_without_tsx(hosts) -> None:
    result = run(
        "migrate", "--cpu", "Skylake-Server", "--source", hosts["skx"], "--target", hosts["notsx"], "--json"
    )
    assert result.returncode == 1
    body = json.loads(result.stdout)
    assert body["verdict"] == "deny" and body["reasons"][0]["code"] == "missing-flags"
    assert "hle, rtm" in body["reasons"][0]["message"] and body["suggestion"]


def test_migrate_host_amd_to_intel_denied_for_the_vendor(hosts) -> None:
    result = run("migrate", "--cpu", "host", "--source", hosts["zen2"], "--target", hosts["skx"], "--json")
    assert result.returncode == 1
    body = json.loads(result.stdout)
    assert set(body) == {"verdict", "reasons", "suggestion"}
    assert body["verdict"] == "deny" and [r["code"] for r in body["reasons"]] == ["vendor-mismatch"]
    assert body["suggestion"].endswith("runs on both pve1 and pve3")


def test_migrate_stopped_passthrough_is_allowed(hosts) -> None:
    result = run("migrate", "--cpu", "host", "--source", hosts["zen2"], "--target", hosts["skx"], "--stopped")
    assert result.returncode == 0 and result.stdout.startswith("ALLOW")


def test_migrate_epyc_rome_to_intel_is_denied(hosts) -> None:
    result = run("migrate", "--cpu", "EPYC-Rome", "--source", hosts["zen2"], "--target", hosts["skx"])
    assert result.returncode == 1
    assert result.stdout.startswith("DENY") and "sse4a" in result.stdout and "suggestion:" in result.stdout


def test_recommend(hosts) -> None:
    result = run("recommend", "--host", hosts["zen2"], "--host", hosts["skx"], "--json")
    assert result.returncode == 0
    body = json.loads(result.stdout)
    assert body["recommended"] == "x86-64-v3" and body["ranked"][0] == "x86-64-v3"
    assert {
        "type": "x86-64-v4",
        "host": "pve1",
        "missing": ["avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512vl"],
    } in body["blocked"]
    human = run("recommend", "--host", hosts["zen2"], "--host", hosts["skx"])
    assert human.stdout.startswith("recommended: x86-64-v3")


def test_models(hosts) -> None:
    result = run("models", "--json")
    assert result.returncode == 0
    body = json.loads(result.stdout)
    names = {m["name"]: m for m in body["models"]}
    assert {"kvm64", "x86-64-v2-AES", "x86-64-v4", "host"} <= set(names)
    assert names["EPYC-Rome"]["vendor"] == "amd" or names.get("EPYC-Rome-v1", {}).get("vendor") == "amd"
    assert body["provenance"]
    assert run("models").stdout.splitlines()[0].split()[:2] == ["TYPE", "VENDOR"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["check", "--cpu", "Skylake", "--host", "{zen2}"], "unknown CPU type 'Skylake'"),
        (["check", "--cpu", "kvm64,flags=pcid", "--host", "{zen2}"], "malformed flag list"),
        (["check", "--cpu", "kvm64,flags=+avx2", "--host", "{zen2}"], "not allowed in a VM's cpu flags"),
        (["check", "--cpu", "kvm64,,bogus", "--host", "{zen2}"], "unexpected 'bogus'"),
        (["check", "--cpu", "custom-foo", "--host", "{zen2}"], "unknown CPU type 'custom-foo'"),
        (["check", "--cpu", "kvm64", "--host", "/nonexistent/h.json"], "does not exist"),
        (["check", "--cpu", "kvm64", "--host", "-", "--host", "-"], "only once"),
        (["migrate", "--cpu", "kvm64,hidden=2", "--source", "{zen2}", "--target", "{skx}"], "not a boolean"),
        (["recommend", "--host", "{bad}"], "not valid JSON"),
    ],
)
def test_bad_input_exits_2_with_one_line(hosts, tmp_path: Path, args: list[str], fragment: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    paths = {**hosts, "bad": str(bad)}
    result = run(*[a.format(**paths) for a in args], stdin="")
    one_line_error(result, fragment)


def test_custom_models_file(hosts, tmp_path: Path) -> None:
    conf = tmp_path / "cpu-models.conf"
    conf.write_text(
        "cpu-model: v4lite\n    flags -avx512f;-avx512bw;-avx512cd;-avx512dq;-avx512vl\n"
        "    reported-model x86-64-v4\n"
    )
    result = run(
        "check", "--cpu", "custom-v4lite", "--host", hosts["zen2"], "--custom-models", str(conf), "--json"
    )
    assert result.returncode == 0 and json.loads(result.stdout)[0]["runnable"] is True


@pytest.mark.skipif(REAL is None, reason=SKIP_REASON)
def test_real_dumps_load_through_the_cli() -> None:
    assert REAL is not None
    files = sorted(str(p) for p in REAL.glob("*.json"))
    result = run("check", "--cpu", "kvm64", *[x for f in files for x in ("--host", f)], "--json")
    assert result.returncode in (0, 1), result.stderr
    assert len(json.loads(result.stdout)) == len(files)


def test_bad_custom_models_file_exits_2(hosts, tmp_path: Path) -> None:
    conf = tmp_path / "cpu-models.conf"
    conf.write_text("cpu-model: x\n    flags avx2\n")
    result = run("check", "--cpu", "custom-x", "--host", hosts["zen2"], "--custom-models", str(conf))
    one_line_error(result, "malformed flag list")
    missing = run(
        "check", "--cpu", "kvm64", "--host", hosts["zen2"], "--custom-models", str(tmp_path / "nope")
    )
    one_line_error(missing, "cannot be read")


def test_human_check_notes_undecidable_features(hosts, tmp_path: Path) -> None:
    nobugs = tmp_path / "pve5.json"
    nobugs.write_text(json.dumps({"vendor": "intel", "model": "Xeon", "flags": SKX_FLAGS}))
    conf = tmp_path / "cpu-models.conf"
    conf.write_text("cpu-model: m\n    flags +mds-no\n    reported-model kvm64\n")
    result = run("check", "--cpu", "custom-m", "--host", str(nobugs), "--custom-models", str(conf))
    assert result.returncode == 0, result.stderr
    assert "note: cannot tell whether pve5 offers mds-no needed by cpu custom-m" in result.stdout
