"""Fixtures of the bot tests: the Slack-API-shaped test server, the stand-in service, and the real
Bolt app serving signed HTTP requests.

The test helpers are imported inside the fixtures: this file is loaded before the session's private
Redis is started, and ``tests.bot.support`` reads that Redis's address when it is imported."""

from __future__ import annotations

import pytest


@pytest.fixture()
def slack():
    from tests.fakes.slack_api_server import SlackApiServer

    with SlackApiServer() as server:
        yield server


@pytest.fixture()
def service():
    from tests.bot.support import FakeService

    with FakeService() as svc:
        yield svc


@pytest.fixture()
def bot(slack, service):
    from tests.bot.signed_requests import Bot

    b = Bot(slack, service.url)
    yield b
    b.stop()
