"""``migration-guard serve``: the compatibility service (uvicorn). ``--demo`` serves it against
the built-in Proxmox-shaped test cluster (no Proxmox, no Redis needed)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from migration_guard.errors import ConfigError
from migration_guard.service.settings import MEMORY_URL, Settings, load_settings, split_listen

log = logging.getLogger("migration_guard.serve")

#: how ``serve --workers N`` tells its worker processes the --config file (internal)
CONFIG_FOR_WORKERS = "_MIGRATION_GUARD_SERVE_CONFIG"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the compatibility service (HTTP API)",
        description="Run the compatibility service. Settings: MIGRATION_GUARD_* environment variables, "
        "or the same keys in the env file given with --config. Exit 2 on a missing or wrong setting.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="env file with MIGRATION_GUARD_* keys (the environment wins)"
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="serve against a built-in demo cluster (Proxmox-shaped test server); prints a token",
    )
    parser.add_argument("--scenario", default="demo", help=argparse.SUPPRESS)
    parser.add_argument("--listen", help="host:port (default MIGRATION_GUARD_LISTEN, else 127.0.0.1:8080)")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="server processes sharing the port (default MIGRATION_GUARD_WORKERS, else 1); more than "
        "one needs Redis: they share its cache (one Proxmox read per key between them), decisions "
        "and veto events",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from migration_guard.api.app import create_app
    from migration_guard.service.guard import build_service

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides: dict = {"listen": args.listen} if args.listen else {}
    if args.workers is not None:
        overrides["workers"] = args.workers
    demo = None
    if args.demo:
        from migration_guard.demo.stack import start_demo

        demo = start_demo(args.config, scenario=args.scenario, **overrides)
        settings = demo.settings
    else:
        settings = load_settings(args.config, **overrides)
        settings.require_proxmox()  # a missing Proxmox setting is named first
        _check_store(settings)
    if settings.verify_ssl is False:
        log.warning(
            "MIGRATION_GUARD_PVE_VERIFY_SSL=false: the Proxmox API's certificate is not checked, so "
            "anyone on the path can pose as Proxmox and its token; set it to the cluster's CA file "
            "(/etc/pve/pve-root-ca.pem)"
        )
    try:
        host, port = split_listen(settings.listen)
    except ValueError as exc:
        raise ConfigError(f"MIGRATION_GUARD_LISTEN is wrong: {exc}") from None
    if settings.workers > 1:
        if demo is not None or settings.redis_url == MEMORY_URL:
            raise ConfigError(
                f"--workers {settings.workers} needs Redis (MIGRATION_GUARD_REDIS_URL=redis://...): the "
                "workers share the cache, decisions and veto events through it; with an in-process "
                "store each would keep its own"
            )
        return _run_workers(settings, args, host, port)
    try:
        service = build_service(settings)
        app = create_app(service, settings.bearer_tokens(), refresh=settings.inventory_refresh)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=args.log_level,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        if demo is not None:
            _announce(server, demo, app)
        server.run()
        return 0 if server.started else 3
    finally:
        if demo is not None:
            demo.stop()


def _run_workers(settings: Settings, args: argparse.Namespace, host: str, port: int) -> int:
    """``settings.workers`` processes on one listening socket (uvicorn's supervisor restarts one
    that dies); each builds its own service from the same settings (``worker_app``)."""
    import asyncio

    import uvicorn

    from migration_guard.service.guard import build_service

    # what would stop a worker at start (the clusters file, the store URL) stops start-up here,
    # with its one line, not N workers restarted in a loop
    asyncio.run(build_service(settings).close())
    os.environ[CONFIG_FOR_WORKERS] = args.config or ""
    os.environ["MIGRATION_GUARD_WORKERS"] = str(settings.workers)  # what the workers read
    log.info("serving with %d worker processes on %s:%d", settings.workers, host, port)
    uvicorn.run(
        "migration_guard.cli.serve:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=settings.workers,
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return 0


def worker_app() -> Any:
    """The app of one worker of ``serve --workers N`` (uvicorn imports it by name): its own
    service from the same settings."""
    from migration_guard.api.app import create_app
    from migration_guard.service.guard import build_service

    settings = load_settings(os.environ.get(CONFIG_FOR_WORKERS) or None)
    service = build_service(settings)
    return create_app(service, settings.bearer_tokens(), refresh=settings.inventory_refresh)


def _check_store(settings: Settings) -> None:
    """Outside the demo the service needs Redis (decisions, veto events, the shared cache), or
    the explicit opt-in ``memory://``, which is warned about at every start."""
    if not settings.redis_url:
        raise ConfigError(
            "MIGRATION_GUARD_REDIS_URL is not set: the service keeps decisions, veto events and its "
            "cache in Redis; set e.g. redis://127.0.0.1:6379/0 (or memory:// for an in-process store "
            "that forgets everything at restart)"
        )
    if settings.redis_url == MEMORY_URL:
        log.warning(
            "MIGRATION_GUARD_REDIS_URL=memory://: decisions and veto events live in this process only; "
            "they are lost at restart, the Slack bot never sees a veto, and workers share nothing"
        )


def _announce(server, demo, app) -> None:
    """Print the banner once uvicorn is listening (with the real port when 0 was asked), with a
    one-time login link to the dashboard (a code for the demo's token, never the token itself)."""
    from migration_guard.demo.stack import banner

    startup = server.startup

    async def startup_and_print(sockets=None):
        await startup(sockets=sockets)
        if not server.started:
            return
        host, port = server.config.host, server.config.port
        for srv in getattr(server, "servers", []):
            for sock in srv.sockets:
                host, port = sock.getsockname()[:2]
                break
        url = f"http://{host}:{port}"
        try:
            code = await app.state.web_sessions.new_code(demo.token)
            login = f"{url}/ui/login/once?code={code}"
        except Exception as exc:  # noqa: BLE001 - the banner goes out without the link
            login = f"(no one-time link: {exc}; sign in at {url}/ui/login with the token)"
        print(banner(demo, url, login), flush=True)

    server.startup = startup_and_print  # type: ignore[method-assign]
    _ = sys
