"""Settings: environment and --config env file, one-line errors naming the setting, secrets hidden."""

from __future__ import annotations

import pytest

from migration_guard.errors import ConfigError
from migration_guard.service.settings import Settings, load_settings

KEYS = (
    "PVE_HOST",
    "PVE_USER",
    "PVE_TOKEN_NAME",
    "PVE_TOKEN_VALUE",
    "PVE_VERIFY_SSL",
    "PVE_TIMEOUT",
    "REDIS_URL",
    "API_TOKENS",
    "LISTEN",
    "PVE_CLUSTER_NAME",
    "CACHE_NODE_TTL",
    "CACHE_VM_TTL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in KEYS:
        monkeypatch.delenv(f"MIGRATION_GUARD_{key}", raising=False)


def full(monkeypatch):
    monkeypatch.setenv("MIGRATION_GUARD_PVE_HOST", "pve1.example.com")
    monkeypatch.setenv("MIGRATION_GUARD_PVE_USER", "guard@pve")
    monkeypatch.setenv("MIGRATION_GUARD_PVE_TOKEN_NAME", "check")
    monkeypatch.setenv("MIGRATION_GUARD_PVE_TOKEN_VALUE", "s3cret-token-value")
    monkeypatch.setenv("MIGRATION_GUARD_API_TOKENS", "tok-a, tok-b")


def test_defaults_and_env(monkeypatch):
    full(monkeypatch)
    s = load_settings()
    s.require_proxmox()
    assert s.pve_host == "pve1.example.com"
    assert s.listen == "127.0.0.1:8080"
    assert s.verify_ssl is True
    assert s.bearer_tokens() == ("tok-a", "tok-b")


def test_missing_host_names_the_setting_in_one_line(monkeypatch):
    full(monkeypatch)
    monkeypatch.delenv("MIGRATION_GUARD_PVE_HOST")
    with pytest.raises(ConfigError) as err:
        load_settings().require_proxmox()
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("MIGRATION_GUARD_PVE_HOST is not set")


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("PVE_TIMEOUT", "soon", "MIGRATION_GUARD_PVE_TIMEOUT"),
        ("PVE_TIMEOUT", "0", "MIGRATION_GUARD_PVE_TIMEOUT"),
        ("PVE_VERIFY_SSL", "/nonexistent/ca.pem", "MIGRATION_GUARD_PVE_VERIFY_SSL"),
        ("LISTEN", "8080", "MIGRATION_GUARD_LISTEN"),
        ("PVE_HOST", "https://pve1:8006", "MIGRATION_GUARD_PVE_HOST"),
        ("PVE_HOST", "pve1:web", "MIGRATION_GUARD_PVE_HOST"),
    ],
)
def test_wrong_value_names_the_setting(monkeypatch, key, value, named):
    full(monkeypatch)
    monkeypatch.setenv(f"MIGRATION_GUARD_{key}", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith(f"{named} is wrong")
    assert "\n" not in str(err.value)


def test_missing_token_value_and_api_tokens(monkeypatch):
    full(monkeypatch)
    monkeypatch.delenv("MIGRATION_GUARD_PVE_TOKEN_VALUE")
    with pytest.raises(ConfigError, match="^MIGRATION_GUARD_PVE_TOKEN_VALUE is not set"):
        load_settings().require_proxmox()
    full(monkeypatch)
    monkeypatch.setenv("MIGRATION_GUARD_API_TOKENS", " , ")
    with pytest.raises(ConfigError, match="^MIGRATION_GUARD_API_TOKENS is not set"):
        load_settings().require_proxmox()


def test_config_file_and_environment_wins(monkeypatch, tmp_path):
    env = tmp_path / "guard.env"
    env.write_text(
        "MIGRATION_GUARD_PVE_HOST=file-host:8443\nMIGRATION_GUARD_PVE_USER=guard@pve\n"
        "MIGRATION_GUARD_PVE_TIMEOUT=7\nMIGRATION_GUARD_CACHE_VM_TTL=2\n"
    )
    monkeypatch.setenv("MIGRATION_GUARD_PVE_TIMEOUT", "3")
    s = load_settings(str(env))
    assert s.pve_host == "file-host:8443"
    assert s.pve_timeout == 3.0
    assert s.cache_vm_ttl == 2.0


def test_config_file_missing():
    with pytest.raises(ConfigError, match="no such file"):
        load_settings("/nonexistent/guard.env")


def test_ca_bundle_path(monkeypatch, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("MIGRATION_GUARD_PVE_VERIFY_SSL", str(ca))
    assert load_settings().verify_ssl == str(ca)
    monkeypatch.setenv("MIGRATION_GUARD_PVE_VERIFY_SSL", "false")
    assert load_settings().verify_ssl is False


def test_tokens_never_in_repr_or_str(monkeypatch):
    full(monkeypatch)
    s = load_settings()
    for text in (repr(s), str(s), str(s.model_dump())):
        assert "s3cret-token-value" not in text
        assert "tok-a" not in text


def test_settings_type_is_pydantic_settings():
    assert Settings.model_config["env_prefix"] == "MIGRATION_GUARD_"


def test_worker_count_and_memo_cap_are_settings(monkeypatch):
    from tests.fakes.service import make_service

    monkeypatch.setenv("MIGRATION_GUARD_PROXMOX_WORKERS", "7")
    monkeypatch.setenv("MIGRATION_GUARD_VERDICT_MEMO_CAP", "150")
    service = make_service()
    assert service.settings.proxmox_workers == 7 and service.settings.verdict_memo_cap == 150
    assert service.pool._max_workers == 7
    monkeypatch.setenv("MIGRATION_GUARD_PROXMOX_WORKERS", "0")
    with pytest.raises(ConfigError, match="MIGRATION_GUARD_PROXMOX_WORKERS"):
        load_settings(None)
