"""Host CPU readers (shared/migration_guard/engine/hosts.py): /proc/cpuinfo text, JSON host files, Proxmox
status, cpu-flags."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from migration_guard.engine.hosts import (
    HostCpu,
    host_from_cpuinfo_text,
    host_from_json,
    host_from_proxmox,
    host_from_qemu_flags,
    load_host_file,
    vendor_of,
)
from migration_guard.errors import HostDataError

CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 49
model name\t: AMD EPYC 7742 64-Core Processor
flags\t\t: fpu vme sse4_2 svm sse4a lahf_lm
bugs\t\t: sysret_ss_attrs spectre_v1 spectre_v2 spec_store_bypass

processor\t: 1
vendor_id\t: AuthenticAMD
flags\t\t: fpu other
"""


def test_cpuinfo_text_reads_the_first_processor() -> None:
    host = host_from_cpuinfo_text(CPUINFO, "pve1")
    assert host == HostCpu(
        name="pve1",
        vendor="amd",
        model="AMD EPYC 7742 64-Core Processor",
        flags=frozenset({"fpu", "vme", "sse4_2", "svm", "sse4a", "lahf_lm"}),
        flag_source="cpuinfo",
        bugs=frozenset({"sysret_ss_attrs", "spectre_v1", "spectre_v2", "spec_store_bypass"}),
        family=23,
        model_number=49,
    )


def test_cpuinfo_without_bugs_line_has_unknown_bugs() -> None:
    text = "vendor_id : GenuineIntel\nmodel name : Intel(R) Xeon(R) CPU E5-2670\nflags : fpu vmx\n"
    host = host_from_cpuinfo_text(text, "n")
    assert host.bugs is None and host.vendor == "intel"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("processor : 0\nvendor_id : GenuineIntel\n", "no 'flags' line"),
        ("processor : 0\nFeatures : fp asimd\n", "ARM"),
        ("flags :   \n", "'flags' line is empty"),
    ],
)
def test_cpuinfo_errors(text: str, fragment: str) -> None:
    with pytest.raises(HostDataError, match=fragment):
        host_from_cpuinfo_text(text, "n")


@pytest.mark.parametrize(
    ("vendor_id", "model", "flags", "expected"),
    [
        ("GenuineIntel", "", (), "intel"),
        ("AuthenticAMD", "", (), "amd"),
        ("HygonGenuine", "", (), "amd"),
        (None, "AMD EPYC 7742 64-Core Processor", (), "amd"),
        (None, "AMD Ryzen 9 5950X 16-Core Processor", (), "amd"),
        (None, "Quad-Core AMD Opteron(tm) Processor 2378", (), "amd"),
        (None, "Hygon C86 7285 32-core Processor", (), "amd"),
        (None, "Intel(R) Xeon(R) Gold 6132 CPU @ 2.60GHz", (), "intel"),
        (None, "Intel(R) Core(TM) i5 CPU M 560 @ 2.67GHz", (), "intel"),
        (None, "Intel(R) Atom(TM) CPU C3758", (), "intel"),
        (None, "Intel(R) Celeron(R) N5105", (), "intel"),
        (None, "Common KVM processor", ("svm", "sse4a", "fpu"), "amd"),
        (None, "QEMU Virtual CPU version 2.5+", ("vmx", "est"), "intel"),
        (None, "", ("fpu", "sse2"), "unknown"),
    ],
)
def test_vendor_from_id_model_string_and_flags(vendor_id, model, flags, expected) -> None:
    assert vendor_of(vendor_id, model, flags) == expected


def test_json_host_with_list_or_string_flags() -> None:
    a = host_from_json({"name": "pve3", "vendor": "intel", "model": "Xeon", "flags": ["avx2", "AES"]}, "file")
    b = host_from_json({"name": "pve3", "vendor": "intel", "model": "Xeon", "flags": "avx2 aes"}, "file")
    assert a == b and a.flags == {"avx2", "aes"} and a.bugs is None and a.flag_source == "cpuinfo"


def test_json_host_defaults_name_and_detects_vendor() -> None:
    host = host_from_json({"model": "AMD EPYC 7302", "flags": "svm sse4a", "bugs": []}, "pve9")
    assert host.name == "pve9" and host.vendor == "amd" and host.bugs == frozenset()


def test_json_host_reads_the_real_cpu_fixture_shape() -> None:
    host = host_from_json(
        {
            "source": "x",
            "model_name": "Intel(R) Xeon(R) Gold 6132",
            "vendor_id": "GenuineIntel",
            "cpu_family": 6,
            "model": 85,
            "flags": ["avx512f"],
            "bugs": ["mds"],
        },
        "skx",
    )
    assert (host.vendor, host.model, host.family, host.model_number) == (
        "intel",
        "Intel(R) Xeon(R) Gold 6132",
        6,
        85,
    )
    assert host.bugs == {"mds"}


def test_json_host_with_qemu_flag_source() -> None:
    host = host_from_json({"name": "n", "vendor": "amd", "flags": ["sse4.2"], "flag_source": "qemu-kvm"}, "x")
    assert host.flag_source == "qemu-kvm"


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ([1, 2], "expected a JSON object"),
        ({"name": "n"}, "no 'flags'"),
        ({"name": "n", "flags": 5}, "flags must be a list"),
        ({"name": "n", "flags": []}, "'flags' is empty"),
        ({"name": "", "flags": "a"}, "'name' must be a non-empty string"),
        ({"name": "n", "flags": "a", "vendor": "via"}, "unknown vendor 'via'"),
        ({"name": "n", "flags": "a", "flag_source": "magic"}, "flag_source"),
    ],
)
def test_json_host_errors(obj, fragment: str) -> None:
    with pytest.raises(HostDataError, match=fragment):
        host_from_json(obj, "file")


def test_proxmox_node_status() -> None:
    host = host_from_proxmox("pve1", {"model": "AMD EPYC 7742 64-Core Processor", "flags": "fpu svm sse4a"})
    assert host.vendor == "amd" and host.flags == {"fpu", "svm", "sse4a"} and host.bugs is None
    with pytest.raises(HostDataError, match="no cpuinfo.flags"):
        host_from_proxmox("pve1", {"model": "x"})


def test_qemu_cpu_flags() -> None:
    host = host_from_qemu_flags("pve2", "Intel(R) Xeon(R)", ["sse4.2", "avx2"])
    assert host.flag_source == "qemu-kvm" and host.vendor == "intel"
    assert host_from_qemu_flags("pve2", "", ["svm"], vendor="amd").vendor == "amd"


def test_load_host_file_json_and_cpuinfo(tmp_path: Path) -> None:
    j = tmp_path / "pve7.json"
    j.write_text(json.dumps({"vendor": "amd", "model": "EPYC", "flags": "svm"}))
    assert load_host_file(str(j)).name == "pve7"
    j.write_text(json.dumps({"name": "named", "vendor": "amd", "model": "EPYC", "flags": "svm"}))
    assert load_host_file(str(j)).name == "named"
    c = tmp_path / "pve8.cpuinfo"
    c.write_text(CPUINFO)
    host = load_host_file(str(c))
    assert host.name == "pve8" and host.family == 23


def test_load_host_file_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(CPUINFO))
    assert load_host_file("-").name == "stdin"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "does not exist"),
        ("", "is empty"),
        ("{bad json", "is not valid JSON"),
        (b"\xff\xfe", "cannot be read"),
    ],
)
def test_load_host_file_errors(tmp_path: Path, content, fragment: str) -> None:
    path = tmp_path / "h.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(HostDataError, match=fragment):
        load_host_file(str(path))
