from pathlib import Path

import pytest

from tests.support.node_kit import Node


@pytest.fixture
def node(tmp_path: Path) -> Node:
    """A temporary Proxmox node for the installer (fake qm/pvesm/systemctl, its own root)."""
    return Node(tmp_path)
