"""The operator-facing deployment files (deploy/) say what the code does.

Each test reads a deploy file the way its consumer does (systemd, compose, the hook's own config
reader, the bot's settings reader, the CLI's argument parser) and checks the behaviour an
operator relies on: every setting documented, every documented command accepted, restarts that
do not loop on a bad setting, a non-root container, persistent Redis.
"""

from __future__ import annotations

import argparse
import configparser
import importlib.machinery
import importlib.util
import inspect
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ENV_EXAMPLE = DEPLOY / "migration-guard.env.example"
HOOK_CONF_EXAMPLE = DEPLOY / "hook.conf.example"
UNITS = {
    "migration-guard.service": "serve",
    "migration-guard-bot.service": "bot",
}
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
HOOK = ROOT / "hookscript" / "migration-guard-hook"
HOOK_MODULE = ROOT / "hookscript" / "guard_hook.py"  # the hook's code, which the launcher HOOK imports
SETTINGS_FILES = {
    "service": ROOT / "shared" / "migration_guard" / "service" / "settings.py",
    "bot": ROOT / "bot" / "migration_guard_bot" / "settings.py",
}
DOCS = sorted(DEPLOY.glob("*.md")) + [ROOT / "README.md"]
SETTING_NAME = re.compile(r"\b((?:MIGRATION_GUARD|SLACK)_[A-Z0-9_]*[A-Z0-9])\b")


# --- helpers -------------------------------------------------------------------------------------


def parse_env_file(path: Path) -> tuple[dict[str, str], list[str]]:
    """KEY=value lines as systemd's EnvironmentFile= and compose's env_file: read them.

    Returns (active settings, problems). Commented lines are documentation, not settings.
    """
    values: dict[str, str] = {}
    problems: list[str] = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
            problems.append(f"line {n}: not KEY=value: {raw!r}")
            continue
        if key in values:
            problems.append(f"line {n}: {key} set twice")
        if not value:
            problems.append(f"line {n}: {key} is empty (an empty value is not 'unset')")
        if " #" in value or value[:1] in "\"'":
            problems.append(f"line {n}: {key}: no quotes or trailing comments (compose and systemd differ)")
        values[key] = value
    return values, problems


def documented_names(path: Path) -> set[str]:
    """Every setting name in the file, set or commented out."""
    names = set()
    for line in path.read_text().splitlines():
        m = re.match(r"\s*#?\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            names.add(m.group(1))
    return names


def settings_names(path: Path) -> set[str]:
    """The environment names a settings module reads: literal names in its source, plus the
    fields of any pydantic-settings class (env_prefix + field name, or its alias)."""
    names = set(SETTING_NAME.findall(path.read_text()))
    module_name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a half-written module: the literal names still count
        print(f"note: cannot import {module_name}: {exc}")
        return names
    try:
        from pydantic_settings import BaseSettings
    except ImportError:  # pragma: no cover
        return names
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if not issubclass(cls, BaseSettings) or cls is BaseSettings or cls.__module__ != module.__name__:
            continue
        prefix = (cls.model_config.get("env_prefix") or "").upper()
        for field_name, info in cls.model_fields.items():
            alias = info.validation_alias or info.alias
            if isinstance(alias, str):
                names.add(alias.upper())
            elif alias is not None and hasattr(alias, "choices"):
                names.update(str(c).upper() for c in alias.choices if isinstance(c, str))
            else:
                names.add(prefix + field_name.upper())
    return names


def load_hook_module():
    loader = importlib.machinery.SourceFileLoader("migration_guard_hook_under_test", str(HOOK_MODULE))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def cli_parser() -> argparse.ArgumentParser:
    from migration_guard.cli.main import build_parser

    return build_parser()


def registered_commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def all_command_modules_present() -> bool:
    from migration_guard.cli.main import COMMAND_MODULES

    return all(importlib.util.find_spec(name) is not None for name in COMMAND_MODULES)


def code_blocks(path: Path) -> list[str]:
    """Fenced blocks (also indented ones in lists) and inline `migration-guard ...` spans."""
    text = path.read_text()
    blocks = re.findall(r"^[ \t]*```[a-z]*\n(.*?)^[ \t]*```", text, flags=re.S | re.M)
    inline = re.findall(r"(?<!`)`((?:/\S+/)?migration-guard [^`\n]+)`(?!`)", text)
    return blocks + inline


def documented_cli_calls(path: Path) -> list[list[str]]:
    """`migration-guard ...` invocations in the shell code blocks of a doc, as argv lists."""
    calls = []
    for block in code_blocks(path):
        text = re.sub(r"\\\n\s*", " ", block)
        for line in text.splitlines():
            line = line.split(" #", 1)[0]
            line = re.sub(r"\[[^\]]*\]", " ", line)  # [optional placeholders]
            for segment in re.split(r"&&|\|\||;|\||\bdo\b|\bdone\b", line):
                try:
                    tokens = shlex.split(segment)
                except ValueError:
                    continue
                for i, tok in enumerate(tokens):
                    at_command = i == 0 or tokens[i - 1].startswith("root@")  # or `ssh root@node ...`
                    if at_command and tok.rsplit("/", 1)[-1] == "migration-guard" and i + 1 < len(tokens):
                        argv = []
                        for t in tokens[i + 1 :]:
                            if t[:1] in "<>" or t.startswith("2>"):
                                break
                            argv.append(t)
                        if argv and re.fullmatch(r"[a-z][a-z-]*", argv[0]):
                            calls.append(argv)
                        break
    return calls


# --- the env example -----------------------------------------------------------------------------


def test_env_example_parses_as_systemd_and_compose_read_it():
    values, problems = parse_env_file(ENV_EXAMPLE)
    assert problems == []
    assert "MIGRATION_GUARD_PVE_HOST" in values


@pytest.mark.parametrize("part", sorted(SETTINGS_FILES))
def test_env_example_documents_every_setting_the_code_reads(part):
    path = SETTINGS_FILES[part]
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} does not exist yet")
    missing = settings_names(path) - documented_names(ENV_EXAMPLE)
    assert not missing, f"add to {ENV_EXAMPLE.name} (with a comment): {sorted(missing)}"


def test_env_example_names_no_setting_the_code_does_not_read():
    if not all(p.exists() for p in SETTINGS_FILES.values()):
        pytest.skip(
            "shared/migration_guard/service/settings.py or bot/migration_guard_bot/settings.py does "
            "not exist yet"
        )
    known = set().union(*(settings_names(p) for p in SETTINGS_FILES.values()))
    unknown = documented_names(ENV_EXAMPLE) - known
    assert not unknown, f"{ENV_EXAMPLE.name} documents settings nothing reads: {sorted(unknown)}"


def test_every_setting_in_env_example_has_a_comment_above_it():
    lines = ENV_EXAMPLE.read_text().splitlines()
    bare = []
    for i, line in enumerate(lines):
        if re.match(r"\s*#?\s*[A-Z][A-Z0-9_]*=", line):
            above = lines[i - 1].strip() if i else ""
            # a comment line right above, or the commented setting line itself continues a comment
            if not above.startswith("#") or re.match(r"#\s*[A-Z][A-Z0-9_]*=", above):
                bare.append(line.split("=")[0].lstrip("# "))
    assert bare == []


def test_env_example_is_accepted_by_the_bot_settings_reader():
    from migration_guard_bot.settings import BotSettings

    values, _ = parse_env_file(ENV_EXAMPLE)
    settings = BotSettings.from_env(values)
    assert settings.command == "/canmove"
    assert settings.listen_address() == ("127.0.0.1", 3000)
    # the units and compose run `migration-guard bot` (Socket Mode, as the app manifest sets up)
    settings.require_slack(http=False)
    assert settings.channel.startswith("C")


def test_env_example_is_accepted_by_the_service_settings_reader(monkeypatch, tmp_path):
    try:
        from migration_guard.service.settings import load_settings
    except ImportError:
        pytest.skip("shared/migration_guard/service/settings.py has no load_settings yet")
    import os

    for name in list(os.environ):
        if name.startswith("MIGRATION_GUARD_"):
            monkeypatch.delenv(name)
    ca = tmp_path / "pve-root-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env_file = tmp_path / "migration-guard.env"
    env_file.write_text(ENV_EXAMPLE.read_text().replace("/etc/migration-guard/pve-root-ca.pem", str(ca)))
    settings = load_settings(str(env_file))
    settings.require_proxmox()
    values, _ = parse_env_file(ENV_EXAMPLE)
    assert settings.pve_host == values["MIGRATION_GUARD_PVE_HOST"]
    assert values["MIGRATION_GUARD_TOKEN"] in settings.bearer_tokens()
    assert settings.verify_ssl == str(ca)


def test_env_example_bot_reaches_the_service_it_configures():
    values, _ = parse_env_file(ENV_EXAMPLE)
    url = values["MIGRATION_GUARD_URL"]
    assert url.split("://", 1)[1].rstrip("/") == values["MIGRATION_GUARD_LISTEN"], (
        "the bot's MIGRATION_GUARD_URL must point at the service's MIGRATION_GUARD_LISTEN"
    )
    tokens = [t.strip() for t in values["MIGRATION_GUARD_API_TOKENS"].split(",")]
    assert values["MIGRATION_GUARD_TOKEN"] in tokens, "the bot's token must be one the service accepts"


# --- hook.conf -----------------------------------------------------------------------------------


def test_hook_conf_example_is_usable_by_the_real_hook(monkeypatch, tmp_path):
    hook = load_hook_module()
    token = tmp_path / "token"
    token.write_text("secret\n")
    token.chmod(0o600)
    text = HOOK_CONF_EXAMPLE.read_text().replace("/etc/migration-guard/token", str(token))
    conf_file = tmp_path / "hook.conf"
    conf_file.write_text(text)
    for var in ("URL", "TOKEN", "MODE", "FAIL", "TIMEOUT", "NODE"):
        monkeypatch.delenv("MIGRATION_GUARD_" + var, raising=False)
    monkeypatch.setenv("MIGRATION_GUARD_CONFIG", str(conf_file))
    conf, problems = hook.load_config()
    assert problems == []
    assert conf["mode"] == "warn", "the example is the rollout start: warn first"
    assert conf["fail"] == "open"
    assert conf["timeout"] == 3.0
    assert conf["token"] == "secret"
    assert conf["url"].startswith("https://")


def test_hook_conf_example_documents_every_key_the_hook_reads(monkeypatch, tmp_path):
    hook = load_hook_module()
    monkeypatch.setenv("MIGRATION_GUARD_CONFIG", str(tmp_path / "absent.conf"))
    conf, _ = hook.load_config()
    text = HOOK_CONF_EXAMPLE.read_text()
    documented = set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, flags=re.M))
    assert set(conf) - documented == set()


# --- systemd -------------------------------------------------------------------------------------


def read_unit(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string((DEPLOY / "systemd" / name).read_text())
    return unit


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_unit_restarts_on_failure_as_a_dedicated_user(name):
    unit = read_unit(name)
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["User"] not in ("", "root", "0")
    assert service["EnvironmentFile"] == "/etc/migration-guard/migration-guard.env"
    # exit 2 = bad setting (shared/migration_guard/cli/main.py): a restart loop cannot fix it
    assert "2" in service["RestartPreventExitStatus"].split()
    assert service["NoNewPrivileges"] == "yes"
    exec_start = shlex.split(service["ExecStart"])
    assert exec_start[0].endswith("/migration-guard")
    assert exec_start[1] == UNITS[name]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_unit_command_is_a_registered_subcommand(name):
    argv = shlex.split(read_unit(name)["Service"]["ExecStart"])[1:]
    commands = registered_commands(cli_parser())
    if argv[0] not in commands and not all_command_modules_present():
        pytest.skip(f"`migration-guard {argv[0]}` is not built yet")
    assert argv[0] in commands
    cli_parser().parse_args(argv)  # SystemExit(2) on an unknown option


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_analyze_verify_finds_nothing(name, tmp_path):
    # systemd-analyze checks that ExecStart exists: point it at this checkout's entry point.
    exe = Path(sys.executable).parent / "migration-guard"
    if not exe.exists():
        pytest.skip("no migration-guard entry point next to the test interpreter")
    text = (DEPLOY / "systemd" / name).read_text()
    text = text.replace("/opt/migration-guard/bin/migration-guard", str(exe))
    unit = tmp_path / name
    unit.write_text(text)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    out = (proc.stdout + proc.stderr).strip()
    # systemd-analyze exits 0 on unknown keys and bad values: its warnings are the signal
    complaints = [line for line in out.splitlines() if str(unit) in line or name in line]
    assert proc.returncode == 0 and complaints == [], out


# --- compose -------------------------------------------------------------------------------------


def load_compose() -> dict | None:
    try:
        import yaml
    except ImportError:
        return None
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_service_bot_and_persistent_redis():
    compose = load_compose()
    if compose is None:  # no PyYAML: the structural minimum as text
        text = COMPOSE.read_text()
        for name in ("service", "bot", "redis"):
            assert re.search(rf"^  {name}:\s*$", text, flags=re.M), name
        assert "--appendonly" in text and "/healthz" in text
        return
    services = compose["services"]
    assert set(services) == {"service", "bot", "redis"}
    redis = services["redis"]
    command = redis["command"] if isinstance(redis["command"], list) else shlex.split(redis["command"])
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(str(v).endswith(":/data") for v in redis["volumes"]), "AOF must live on a volume"
    assert "redis-data" in compose["volumes"]
    for name in ("service", "bot"):
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / services[name]["build"]["context"] / "pyproject.toml").exists()
        assert services[name]["env_file"] == "migration-guard.env"
        assert services[name]["environment"]["MIGRATION_GUARD_REDIS_URL"].startswith("redis://redis:")
        assert services[name]["restart"] == "unless-stopped"
    assert (DEPLOY / "migration-guard.env.example").exists()  # what migration-guard.env is copied from
    health = " ".join(services["service"]["healthcheck"]["test"])
    assert "/healthz" in health
    assert services["service"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_wires_the_bot_to_the_service_port():
    compose = load_compose()
    if compose is None:
        pytest.skip("PyYAML not installed")
    services = compose["services"]
    listen = services["service"]["environment"]["MIGRATION_GUARD_LISTEN"]
    bot_url = services["bot"]["environment"]["MIGRATION_GUARD_URL"]
    assert bot_url == "http://service:" + listen.rsplit(":", 1)[1]
    assert any(str(p).endswith(":" + listen.rsplit(":", 1)[1]) for p in services["service"]["ports"])


@pytest.mark.parametrize("name", ["service", "bot"])
def test_compose_commands_are_registered_subcommands(name):
    compose = load_compose()
    if compose is None:
        pytest.skip("PyYAML not installed")
    argv = compose["services"][name]["command"]
    commands = registered_commands(cli_parser())
    if argv[0] not in commands and not all_command_modules_present():
        pytest.skip(f"`migration-guard {argv[0]}` is not built yet")
    cli_parser().parse_args(argv)


# --- Dockerfile ----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runs_as_a_non_root_user_with_the_cli_entrypoint():
    steps = dockerfile_instructions()
    users = [rest for word, rest in steps if word == "USER"]
    assert users, "no USER: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    last_user = max(i for i, (w, _) in enumerate(steps) if w == "USER")
    assert all(w != "RUN" for w, _ in steps[last_user:]), "RUN after USER would need root"
    assert ("ENTRYPOINT", '["migration-guard"]') in steps
    useradd = " ".join(rest for w, rest in steps if w == "RUN")
    assert re.search(rf"useradd\b.*\b{re.escape(users[-1].split(':')[0])}\b", useradd)
    assert "pip install ." in useradd


def test_dockerfile_base_image_satisfies_requires_python_and_copies_every_package():
    steps = dockerfile_instructions()
    base = [rest for w, rest in steps if w == "FROM"][0]
    assert base == "python:3.11-slim"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    minimum = int(re.search(r">=\s*3\.(\d+)", project["requires-python"]).group(1))
    assert int(re.match(r"python:3\.(\d+)", base).group(1)) >= minimum
    copied = {src for w, rest in steps if w == "COPY" for src in rest.split()[:-1]}
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in folders.items():
        top = folder.split("/")[0]
        assert top in copied, f"{package} ({folder}) is installed but {top} is not copied into the image"
    assert "pyproject.toml" in copied and project["readme"] in copied
    for path in copied:
        assert (ROOT / path).exists(), f"COPY {path}: not in the repository"


# --- docs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_documented_migration_guard_command_parses(doc):
    calls = documented_cli_calls(doc)
    commands = registered_commands(cli_parser())
    pending = sorted({argv[0] for argv in calls if argv[0] not in commands})
    checked = 0
    for argv in calls:
        if argv[0] in pending:
            continue
        try:
            cli_parser().parse_args(argv)
        except SystemExit as exc:
            if exc.code == 0 and "--help" in argv:  # --help prints and exits 0: the command exists
                checked += 1
                continue
            pytest.fail(f"{doc.name}: `migration-guard {shlex.join(argv)}` is refused (exit {exc.code})")
        checked += 1
    if pending:
        if all_command_modules_present():
            pytest.fail(f"{doc.name} documents commands that do not exist: {pending}")
        pytest.skip(f"{checked} commands parse; not built yet: {pending}")


def exit_code_rows(text: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^\|\s*(\d)\s*\|\s*(.+?)\s*\|\s*$", text, re.M)}


@pytest.mark.parametrize("doc", ["deploy/operations.md", "README.md"])
def test_docs_list_the_hook_exit_codes_the_hook_help_lists(doc):
    path = ROOT / doc
    if not path.exists():
        pytest.skip(f"{doc} not written yet")
    rows = exit_code_rows(path.read_text())
    assert set(range(6)) <= set(rows)
    hook_help = subprocess.run(
        [sys.executable, str(HOOK), "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    words = {1: "vendor", 2: "features", 3: "machine", 4: "other", 5: "closed"}
    for code, word in words.items():
        assert word in rows[code].lower(), f"{doc}: exit {code} should mention {word!r}"
        help_line = re.search(rf"^\s+{code}\s+(.+)$", hook_help, re.M).group(1).lower()
        assert word in help_line, f"hook --help: exit {code} should mention {word!r}"
