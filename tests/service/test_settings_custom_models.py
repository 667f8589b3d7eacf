"""The two settings of custom models and address widths: parsed, and a bad value stops start-up with
one line naming the setting."""

from __future__ import annotations

import pytest

from migration_guard.errors import ConfigError
from migration_guard.service.settings import load_settings


def test_node_widths_are_parsed():
    settings = load_settings(None, node_phys_bits="pve1=46, pve2=39,")
    assert settings.phys_bits_by_node == {"pve1": 46, "pve2": 39}


@pytest.mark.parametrize("value", ["pve1", "pve1=abc", "pve1=7", "=46", "pve1=65"])
def test_a_bad_width_names_the_setting(value):
    with pytest.raises(ConfigError) as err:
        load_settings(None, node_phys_bits=value)
    assert "MIGRATION_GUARD_NODE_PHYS_BITS" in str(err.value) and "NODE=BITS" in str(err.value)


def test_the_models_file_must_exist_and_is_read(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(None, cpu_models_conf=str(tmp_path / "missing.conf"))
    assert "MIGRATION_GUARD_CPU_MODELS_CONF" in str(err.value)
    conf = tmp_path / "cpu-models.conf"
    conf.write_text("cpu-model: a\n\treported-model kvm64\n")
    assert load_settings(None, cpu_models_conf=str(conf)).cpu_models_text() == conf.read_text()
    assert load_settings(None).cpu_models_text() is None
