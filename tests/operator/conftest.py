"""The `operator` fixture: the real console script in DEV mode against the test cluster
(started and stopped by tests.support.operator), and a fresh `namespace` per test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.controlplane import ControlPlane
from tests.support.operator import (
    OPERATOR_NAMESPACE,
    OperatorProcess,
    start_operator,
    stop_operator,
)


@pytest.fixture(scope="package")
def operator(
    cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    # For this package only: the dev operator registers a webhook for every annotated pod
    # of the shared control plane, and other packages' tests (tests/chart's admission
    # tests) judge which webhooks the apiserver calls; it unregisters when it stops.
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    op = start_operator(cluster, tmp_path_factory.mktemp("operator"))
    try:
        yield op
    finally:
        stop_operator(op)


@pytest.fixture
def namespace(cluster: ControlPlane) -> str:
    """A fresh namespace with a `default` ServiceAccount (no controller-manager makes one)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("-n", name, "create", "serviceaccount", "default")
    return name
