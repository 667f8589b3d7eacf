"""``migration-guard serve --demo``: the Proxmox-shaped test server with the built-in scenario,
and the settings that point the real service (proxmoxer over HTTPS) at it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from migration_guard.demo.pve_server import RunningServer, start_server
from migration_guard.service.settings import Settings, load_settings


@dataclass(slots=True)
class Demo:
    server: RunningServer
    settings: Settings
    token: str

    def stop(self) -> None:
        self.server.stop()


def start_demo(config_file: str | None = None, scenario: str = "demo", **overrides: object) -> Demo:
    """Start the test server and return settings for the service against it. An API token is
    made up unless MIGRATION_GUARD_API_TOKENS is set; Redis is used only when REDIS_URL is set."""
    server = start_server(scenario)
    token_cfg = server.token
    base = load_settings(config_file)
    tokens = base.api_tokens.get_secret_value() or secrets.token_urlsafe(24)
    values = {
        "pve_host": server.host_port,
        "pve_user": token_cfg.get("user", ""),
        "pve_token_name": token_cfg.get("name", ""),
        "pve_token_value": token_cfg.get("value", ""),
        "pve_verify_ssl": server.ca_path,
        "pve_cluster_name": str(server.scenario.get("cluster") or "demo"),
        "api_tokens": tokens,
    }
    values.update(overrides)
    try:
        settings = load_settings(config_file, **values)
    except Exception:
        server.stop()
        raise
    return Demo(server=server, settings=settings, token=tokens.split(",")[0].strip())


def banner(demo: Demo, url: str, login_link: str = "") -> str:
    """What ``serve --demo`` prints: the URL, a token, the dashboard's one-time login link and three
    example requests."""
    s = demo.server.scenario
    vms = s.get("vms", [])
    nodes = [n["name"] for n in s.get("nodes", [])]
    vm = vms[0] if vms else {"vmid": 101, "node": nodes[0] if nodes else "pve1"}
    target = next((n for n in nodes if n != vm.get("node")), "pve2")
    auth = f'-H "Authorization: Bearer {demo.token}"'
    store = "Redis at MIGRATION_GUARD_REDIS_URL" if demo.settings.redis_url else "embedded in-process store"
    return "\n".join(
        [
            f"migration-guard demo: serving at {url}",
            f"  Proxmox (test server): {demo.server.url}  cluster {demo.settings.pve_cluster_name}, "
            f"nodes {', '.join(nodes)}; store: {store}",
            f"  API token: {demo.token}",
            f"  Dashboard: {url}/ui/ (sign in with the API token)",
            *([f"    one-time login link (works once, for 5 minutes): {login_link}"] if login_link else []),
            "",
            "Try:",
            f"  curl -s {auth} '{url}/v1/vms/{vm['vmid']}/check?target={target}'",
            f"  curl -s {auth} '{url}/v1/vms/{vm['vmid']}/targets'",
            f"  curl -s {auth} -H 'Accept: text/plain' -H 'Content-Type: application/json' "
            f'-d \'{{"vmid": {vm["vmid"]}, "target": "{target}"}}\' {url}/v1/decisions',
            "",
            f"  or: MIGRATION_GUARD_URL={url} MIGRATION_GUARD_TOKEN={demo.token} migration-guard matrix",
            "Stop with Ctrl-C.",
        ]
    )
