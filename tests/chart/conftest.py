"""Fixtures for the chart tests: the chart rendered by the real helm, per values mode, and
fresh namespaces on the test control plane."""

from __future__ import annotations

import json
import uuid
from typing import Protocol

import pytest

from tests.chart.helm import VALUES, Chart, Rendered
from tests.controlplane import ControlPlane, Tools


@pytest.fixture(scope="session")
def chart(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Chart:
    tools.need("helm")
    return Chart(tools.helm, tmp_path_factory.mktemp("chart"))


@pytest.fixture(scope="session", params=sorted(VALUES))
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def rendered(chart: Chart, mode: str) -> Rendered:
    return chart.template(VALUES[mode])


@pytest.fixture(scope="session")
def default(chart: Chart) -> Rendered:
    return chart.template()


class NewNamespace(Protocol):
    def __call__(self, prefix: str, *, restricted: bool = True) -> str: ...


@pytest.fixture(scope="session")
def new_namespace(cluster: ControlPlane) -> NewNamespace:
    """Create a uniquely named namespace with a `default` ServiceAccount (no controller
    manager makes one) and, unless told otherwise, Pod Security "restricted" enforced.
    Namespaces are never deleted: without a controller manager they never finish
    terminating, and unique names keep runs apart."""

    def create(prefix: str, *, restricted: bool = True) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        labels = (
            {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn")}
            if restricted
            else {}
        )
        items = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}},
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": name},
            },
        ]
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        )
        return name

    return create
