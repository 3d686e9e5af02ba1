"""Fixtures of the end-to-end tests on the real node: a namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.node import Node


@pytest.fixture
def node_namespace(node: Node) -> Iterator[str]:
    """A fresh namespace on the node; deleted (without waiting) after the test."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    node.kubectl("create", "namespace", name)
    yield name
    node.kubectl("delete", "namespace", name, "--wait=false", check=False)
