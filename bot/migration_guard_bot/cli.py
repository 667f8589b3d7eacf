"""``migration-guard bot``: the Slack bot.

Socket Mode when SLACK_APP_TOKEN is set; ``--http`` serves /slack/events on
MIGRATION_GUARD_BOT_LISTEN; ``--console`` is a terminal chat without Slack. Unless
``--no-notifier``, vetoes from Redis are posted to MIGRATION_GUARD_SLACK_CHANNEL alongside
(``--notifier-only`` runs just that).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from migration_guard.errors import ConfigError, StoreUnavailable
from migration_guard_bot.settings import BotSettings

log = logging.getLogger("bot")


DESCRIPTION = (
    "Run the Slack bot. Socket Mode when SLACK_APP_TOKEN is set; --http serves "
    "/slack/events on MIGRATION_GUARD_BOT_LISTEN (default 127.0.0.1:3000); --console chats in "
    "the terminal. Vetoes are posted to MIGRATION_GUARD_SLACK_CHANNEL from "
    "MIGRATION_GUARD_REDIS_URL."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bot", help="run the Slack bot (Socket Mode, --http or --console)", description=DESCRIPTION
    )
    _arguments(p)


def main(argv: list[str] | None = None) -> int:
    """``migration-guard-bot``: the bot's own command, the same as ``migration-guard bot``."""
    parser = argparse.ArgumentParser(prog="migration-guard-bot", description=DESCRIPTION)
    _arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ConfigError as exc:
        print(f"migration-guard-bot: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"migration-guard-bot: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


def _arguments(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--http", action="store_true", help="serve the Events API over HTTP")
    mode.add_argument("--console", action="store_true", help="chat in the terminal, no Slack needed")
    mode.add_argument("--notifier-only", action="store_true", help="only post vetoes to Slack")
    p.add_argument("--no-notifier", action="store_true", help="answer questions but post no vetoes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = BotSettings.from_env()
    from migration_guard.client import ServiceClient

    service = ServiceClient(
        settings.service_url, settings.service_token, timeout=20.0, user_agent="migration-guard-bot"
    )
    if args.console:
        from migration_guard_bot import console

        logging.getLogger().setLevel(logging.WARNING)
        return console.run(
            service, sys.stdin, sys.stdout, command=settings.command, prompt=sys.stdin.isatty()
        )
    if args.notifier_only:
        return _notifier_only(settings)
    settings.require_slack(http=args.http or not settings.app_token)
    from migration_guard_bot.app import build_app

    app = build_app(settings, service)
    notifier = None if args.no_notifier else _start_notifier(settings, required=False)
    watch = None if args.no_notifier else _start_coverage_watch(settings, service)
    try:
        if args.http:
            from migration_guard_bot import http_server

            host, port = settings.listen_address()
            try:
                sock = http_server.bind(host, port)
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on MIGRATION_GUARD_BOT_LISTEN={settings.listen} ({exc.strerror})"
                ) from exc
            bound = sock.getsockname()
            log.info("listening on http://%s:%d%s", bound[0], bound[1], http_server.PATH)
            http_server.serve(app, sock)
        else:
            from slack_bolt.adapter.socket_mode import SocketModeHandler
            from slack_sdk.errors import SlackApiError

            log.info("connecting to Slack in Socket Mode")
            handler = SocketModeHandler(app, settings.app_token)
            signal.signal(signal.SIGTERM, _exit_cleanly)
            try:
                handler.start()
            except (KeyboardInterrupt, SystemExit):
                pass
            except SlackApiError as exc:
                error = exc.response.get("error") if exc.response is not None else "unknown"
                raise ConfigError(
                    f"Slack refused SLACK_APP_TOKEN for Socket Mode ({error}); it must be "
                    "an xapp-... app-level token with the connections:write scope"
                ) from exc
            finally:
                handler.close()
    finally:
        if notifier is not None:
            notifier.stop()
        if watch is not None:
            watch.stop()
    return 0


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _store(settings: BotSettings, *, ping: bool = True):  # -> redis.Redis
    import redis

    if not settings.redis_url:
        raise ConfigError("MIGRATION_GUARD_REDIS_URL is not set; the notifier reads vetoes from Redis")
    if settings.redis_url.strip() == "memory://":
        raise ConfigError(
            "MIGRATION_GUARD_REDIS_URL=memory:// is the service's in-process store, which the bot "
            "cannot read; give the service and the bot the same redis:// URL"
        )
    try:
        store = redis.Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_timeout=15,
            socket_connect_timeout=5,
            health_check_interval=30,
        )
        if ping:
            store.ping()
    except ValueError as exc:
        raise ConfigError(f"MIGRATION_GUARD_REDIS_URL is not a Redis URL ({exc})") from exc
    except redis.RedisError as exc:
        raise StoreUnavailable(
            f"Redis at MIGRATION_GUARD_REDIS_URL is not answering ({type(exc).__name__})"
        ) from exc
    return store


def _notifier(settings: BotSettings, *, ping: bool = True):  # -> Notifier
    from slack_sdk import WebClient

    from migration_guard_bot.notifier import Notifier

    if not settings.bot_token:
        raise ConfigError("SLACK_BOT_TOKEN is not set (the xoxb-... token of the Slack app)")
    if not settings.channel:
        raise ConfigError(
            "MIGRATION_GUARD_SLACK_CHANNEL is not set (the channel ID vetoes go to, e.g. C0123ABCD)"
        )
    client = WebClient(
        token=settings.bot_token, base_url=settings.slack_api_url, timeout=15, retry_handlers=[]
    )
    return Notifier(_store(settings, ping=ping), client, settings.channel)


def _start_notifier(settings: BotSettings, *, required: bool):
    if not required and not (settings.channel and settings.redis_url):
        log.warning("not posting vetoes: set MIGRATION_GUARD_SLACK_CHANNEL and MIGRATION_GUARD_REDIS_URL")
        return None
    notifier = _notifier(settings, ping=False)  # a Redis outage is waited out, questions still answered
    threading.Thread(target=notifier.run, name="notifier", daemon=True).start()
    return notifier


def _start_coverage_watch(settings: BotSettings, service: object):  # -> CoverageWatch | None
    """Unguarded running VMs to the channel (coverage_watch.py), beside the veto notifier."""
    if not (settings.channel and settings.bot_token and settings.unguarded_after_s):
        return None
    from slack_sdk import WebClient

    from migration_guard_bot.coverage_watch import CoverageWatch

    client = WebClient(token=settings.bot_token, base_url=settings.slack_api_url, timeout=15)
    watch = CoverageWatch(service, client, settings.channel, settings.unguarded_after_s)
    threading.Thread(target=watch.run, name="coverage-watch", daemon=True).start()
    return watch


def _notifier_only(settings: BotSettings) -> int:
    notifier = _notifier(settings)

    def stop(_signum: int, _frame: object) -> None:
        notifier.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    notifier.run()
    return 0
