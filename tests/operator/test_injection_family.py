"""An injected sidecar sharing a refresh-token family can reach the apiserver: the pod's
service-account token, which the apiserver's ServiceAccount plugin mounts into every
container, is mounted into the injected sidecar too (real kube-apiserver, the operator in
DEV mode)."""

from __future__ import annotations

import json

import pytest

from tests.controlplane import ControlPlane
from tests.operator.test_injection import get_pod, manifest
from tests.support.operator import OperatorProcess

pytestmark = [pytest.mark.cluster]

P = "token-refresher.io/"
FAMILY = {
    P + "inject": "true",
    P + "issuer": "https://idp.example/realms/prod",
    P + "client-id": "billing",
    P + "client-auth": "none",
    P + "grant": "refresh_token",
    P + "refresh-token": "billing-oauth/refresh",
    P + "family-secret": "billing-oauth",
}
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def test_the_injected_sidecar_gets_the_family_secret_and_the_api_token(
    cluster: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cluster.kubectl("apply", "-f", "-", input=manifest("app", namespace, FAMILY))
    spec = get_pod(cluster, namespace, "app")["spec"]
    [sidecar] = [c for c in spec["initContainers"] if c["name"] == "token-refresher"]
    env = {v["name"]: v.get("value") for v in sidecar["env"]}
    assert env["TOKEN_REFRESHER_FAMILY_SECRET"] == "billing-oauth"
    # The default KUBERNETES_TOKEN_FILE and KUBERNETES_CA_FILE are there.
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    assert mounts[SERVICE_ACCOUNT_DIR]["readOnly"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    sources = volumes[mounts[SERVICE_ACCOUNT_DIR]["name"]]["projected"]["sources"]
    assert any("serviceAccountToken" in s for s in sources)
    assert "ca.crt" in json.dumps(sources)
