"""Kubernetes objects the tests and the benchmarks both make: a Pod manifest, and the
Secret a refresh-token family starts from.

Plain dicts and kubectl calls, no client library: the callers send them with
`kubectl apply/create -f -` or through admission as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Only a type here: tests.controlplane imports this package for its helpers.
    from tests.controlplane import ControlPlane

__all__ = ["create_family_secret", "pod_manifest"]

# A container that is never pulled (no registry serves it): enough for admission, for
# the apiserver and for a control plane without a kubelet.
APP = {"name": "app", "image": "registry.invalid/app:1"}


def pod_manifest(
    name: str,
    namespace: str,
    *,
    annotations: Mapping[str, str] | None = None,
    spec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Pod named `name` in `namespace` with `annotations`, and `spec` (default: the one
    container `APP`)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": dict(annotations or {})},
        "spec": dict(spec) if spec is not None else {"containers": [dict(APP)]},
    }


def create_family_secret(
    cluster: ControlPlane, namespace: str, name: str, refresh_token_file: Path
) -> None:
    """The Secret a refresh-token family starts from: key `refresh`, the bootstrap token."""
    cluster.kubectl(
        "-n", namespace, "create", "secret", "generic", name,
        f"--from-file=refresh={refresh_token_file}",
    )  # fmt: skip
