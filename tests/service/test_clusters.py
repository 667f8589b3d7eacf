"""The clusters the service reads (shared/migration_guard/service/clusters.py): the default one from the
single-cluster
settings, the others from MIGRATION_GUARD_CLUSTERS_FILE, each problem one line naming file and
entry; the cluster set's names and its answer for a cluster it does not read."""

from __future__ import annotations

import json

import pytest

from migration_guard.errors import ConfigError, UnknownClusterError
from migration_guard.service.cluster_set import ClusterSet
from migration_guard.service.clusters import endpoints, load_clusters_file
from migration_guard.service.settings import load_settings

SECRET = "5e0f3c2a-0000-4000-8000-0000000000b2"


def settings(**extra):
    values = dict(
        pve_host="pvea1.example.org:8006",
        pve_user="guard@pve",
        pve_token_name="check",
        pve_token_value="a-secret",
        pve_cluster_name="amd",
        api_tokens="t",
    )
    values.update(extra)
    return load_settings(None, **values)


def write(tmp_path, data, name="clusters.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def entry(**extra):
    base = {
        "name": "intel",
        "host": "pveb1.example.org",
        "user": "guard@pve",
        "token_name": "check",
        "token_value_file": "intel.token",
    }
    base.update(extra)
    return base


@pytest.fixture
def token(tmp_path):
    (tmp_path / "intel.token").write_text(SECRET + "\n")
    return tmp_path


def test_without_the_setting_only_the_default_cluster():
    (only,) = endpoints(settings())
    assert (only.name, only.host, only.token_value, only.default) == (
        "amd",
        "pvea1.example.org:8006",
        "a-secret",
        True,
    )


def test_json_file_adds_clusters_after_the_default(token):
    ca = token / "intel-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    path = write(token, {"clusters": [entry(verify_ssl="intel-ca.pem", timeout=3)]})
    first, other = endpoints(settings(clusters_file=str(path)))
    assert first.name == "amd"
    assert (other.name, other.host, other.token_value, other.verify_ssl, other.timeout, other.default) == (
        "intel",
        "pveb1.example.org",
        SECRET,
        str(ca),
        3.0,
        False,
    )
    assert SECRET not in repr(other)


def test_toml_file(token):
    path = write(
        token,
        '[[clusters]]\nname = "intel"\nhost = "10.0.2.11:8006"\nuser = "guard@pve"\n'
        'token_name = "check"\ntoken_value_file = "intel.token"\nverify_ssl = false\n',
        "clusters.toml",
    )
    (other,) = load_clusters_file(path)
    assert (other.host, other.verify_ssl) == ("10.0.2.11:8006", False)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", "not valid JSON"),
        ({"intel": {}}, 'expected {"clusters": [ ... ]}'),
        ({"clusters": [entry(host="")]}, "cluster #1 (intel): host is missing"),
        ({"clusters": [entry(name="bad name")]}, "cluster #1: name 'bad name' must be letters"),
        ({"clusters": [entry(host="https://pveb1")]}, "give host[:port] without https://"),
        ({"clusters": [entry(token_value_file="missing.token")]}, "token_value_file"),
        ({"clusters": [entry(token_value="x")]}, "give token_value or token_value_file, not both"),
        ({"clusters": [entry(verify_ssl="nope.pem")]}, "verify_ssl 'nope.pem' is neither true/false"),
        ({"clusters": [entry(timeout=0)]}, "timeout must be seconds between 0 and 120"),
        ({"clusters": [entry(port=8006)]}, "unknown key 'port'"),
        ({"clusters": [entry(), entry()]}, "cluster name 'intel' appears twice"),
        ({"clusters": [entry(name="amd")]}, "is the default cluster's name"),
    ],
)
def test_bad_files_stop_with_one_line(token, data, message):
    path = write(token, data)
    with pytest.raises(ConfigError) as err:
        endpoints(settings(clusters_file=str(path)))
    text = str(err.value)
    assert message in text and "\n" not in text
    assert text.startswith(f"MIGRATION_GUARD_CLUSTERS_FILE {path}") or "default cluster" in text


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_clusters_file(tmp_path / "nope.json")


def test_a_bad_clusters_file_stops_start_up(token):
    from migration_guard.service.guard import build_service

    path = write(token, {"clusters": [entry(host="")]})
    with pytest.raises(ConfigError, match="host is missing"):
        build_service(settings(clusters_file=str(path)))


class _Home:
    """The part of GuardService a ClusterSet reads at construction."""

    def __init__(self, name, s):
        self.cluster = name
        self.settings = s
        self.store = None
        self.clock = lambda: 0.0

    def sibling(self, reader):
        from migration_guard.service.guard import GuardService

        return GuardService(self.settings, reader, self.store, clock=self.clock)


def test_cluster_set_names_and_an_unknown_cluster(token):
    path = write(token, {"clusters": [entry()]})
    home = _Home("amd", settings(clusters_file=str(path)))
    clusters = ClusterSet(home)
    assert clusters.names == ["amd", "intel"]
    assert clusters.service(None) is home and clusters.service("amd") is home
    assert clusters.service("intel").reader.where == "pveb1.example.org:8006"
    with pytest.raises(UnknownClusterError) as err:
        clusters.service("arm")
    assert "reads no cluster 'arm' (it reads amd, intel)" in str(err.value)
    assert "MIGRATION_GUARD_CLUSTERS_FILE" in str(err.value)


def test_a_cluster_without_certificate_checks_is_warned_about_at_start(token, caplog):
    path = write(token, {"clusters": [entry(verify_ssl=False), entry(name="arm", verify_ssl=True)]})
    caplog.set_level("WARNING", logger="migration_guard.clusters")
    ClusterSet(_Home("amd", settings(clusters_file=str(path))))
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "cluster intel has verify_ssl = false" in warned[0]
