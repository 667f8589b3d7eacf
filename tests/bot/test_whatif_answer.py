"""The bot's what-if answers against the real service over the demo cluster (the Proxmox-shaped test
server through proxmoxer): the question in plain words, the service's what_if block, the message."""

from __future__ import annotations

import json

import pytest

from migration_guard.client import ServiceClient
from migration_guard_bot.answers import answer
from migration_guard_bot.parser import parse
from tests.api.test_whatif_api import TOKEN, demo  # noqa: F401 - the module's demo service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(demo):  # noqa: F811
    with ServiceClient(demo.url, TOKEN, timeout=30) as c:
        yield c


def test_retiring_the_atom(client):
    a = answer(parse("what if we retire pve-atom1?"), client)
    assert a.text.startswith(
        "Removing pve-atom1: the recommended CPU type changes from x86-64-v2-AES to x86-64-v3"
    )
    blocks = json.dumps(a.blocks)
    assert "Must move off the retired nodes first (1)" in blocks and "`dns01`" in blocks
    assert "Would run on every node (1)" in blocks and "`db01`" in blocks


def test_adding_an_epyc_9654_names_the_vms_it_cannot_take(client):
    a = answer(parse("what if we add an EPYC 9654 node?"), client)
    assert a.text.startswith("Adding new-epyc-9654 (AMD EPYC 9654 96-Core Processor)")
    blocks = json.dumps(a.blocks)
    assert "`legacy-erp`" in blocks and "hle, rtm" in blocks


def test_a_node_in_another_case_and_an_unknown_cpu(client):
    a = answer(parse("what if we get rid of PVE-ATOM1"), client)
    assert a.text.startswith("Removing pve-atom1:")
    wrong = answer(parse("what if we add an EPYC 9999 node?"), client)
    assert "no shipped CPU is called 'EPYC 9999'; close names: EPYC 9754, EPYC 9654" in wrong.text
