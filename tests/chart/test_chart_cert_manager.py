"""tls.mode cert-manager: sidecars trust the report endpoint through the Secret's ca.crt.

The chart cannot know cert-manager's CA when it renders, so the ConfigMap carries no
report.caBundle and the operator injects the ca.crt that cert-manager puts beside the
serving certificate, re-read when the Secret is renewed. Here the operator runs as the
chart runs it (not in DEV mode) with the chart's own config.yaml, serving a Secret shaped
like cert-manager's (tls.crt, tls.key, ca.crt) stored in the real kube-apiserver and laid
out on disk as the kubelet mounts it; the apiserver calls its webhook with that CA.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import NewNamespace
from tests.chart.helm import VALUES, Chart
from tests.controlplane import ControlPlane
from tests.support.kube import pod_manifest
from tests.support.operator import OperatorProcess, start_operator, stop_operator
from token_refresher_operator.devcert import write_self_signed
from token_refresher_operator.registration import webhook_configuration

pytestmark = pytest.mark.cluster

# Sorted before the DEV operator's token-refresher-dev, so the apiserver calls this one
# first for the test's namespace (the other then finds the sidecar there and skips).
CONFIGURATION = "token-refresher-cm-test"
HOSTS = ["127.0.0.1", "localhost"]


def store_secret(cluster: ControlPlane, namespace: str, files: dict[str, bytes]) -> dict[str, Any]:
    """Create or replace the kubernetes.io/tls Secret `tr-tls`; return it as stored."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "tr-tls", "namespace": namespace},
        "data": {key: base64.b64encode(value).decode() for key, value in files.items()},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))
    stored: dict[str, Any] = json.loads(
        cluster.kubectl("-n", namespace, "get", "secret", "tr-tls", "-o", "json").stdout
    )
    return stored


def mount(secret: dict[str, Any], volume: Path) -> None:
    """Lay the Secret out as the kubelet does, and swap it in atomically on renewal:
    the files live in a timestamped directory that the symlink `..data` points to."""
    volume.mkdir(exist_ok=True)
    stamp = volume / f"..{time.time_ns()}"
    stamp.mkdir()
    for key, value in secret["data"].items():
        (stamp / key).write_bytes(base64.b64decode(value))
    (volume / "..data_tmp").symlink_to(stamp.name)
    (volume / "..data_tmp").replace(volume / "..data")
    for key in secret["data"]:
        if not (volume / key).is_symlink():
            (volume / key).symlink_to(f"..data/{key}")


def register(cluster: ControlPlane, op: OperatorProcess, *, ca: bytes, namespace: str) -> None:
    """The webhook configuration, with the CA as cert-manager's cainjector sets it."""
    body = webhook_configuration(
        name=CONFIGURATION,
        url=f"https://127.0.0.1:{op.webhook_port}/mutate",
        ca_bundle=ca,
        operator_namespace=op.namespace,
    )
    body["webhooks"][0]["namespaceSelector"] = {
        "matchLabels": {"kubernetes.io/metadata.name": namespace}
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))


def create_pod(cluster: ControlPlane, namespace: str, name: str) -> bool:
    annotations = {
        "token-refresher.io/inject": "true",
        "token-refresher.io/token-url": "https://idp.example/token",
        "token-refresher.io/client-id": "billing",
        "token-refresher.io/client-auth": "none",
    }
    pod = pod_manifest(name, namespace, annotations=annotations)
    proc = cluster.kubectl("create", "-f", "-", input=json.dumps(pod), check=False)
    return proc.returncode == 0


def report_ca(cluster: ControlPlane, namespace: str, name: str) -> str:
    pod = json.loads(cluster.kubectl("-n", namespace, "get", "pod", name, "-o", "json").stdout)
    [sidecar] = pod["spec"]["initContainers"]
    env = {var["name"]: var.get("value") for var in sidecar["env"]}
    return str(env["TOKEN_REFRESHER_REPORT_CA"])


def test_sidecars_trust_the_secrets_ca_crt_and_its_renewal(
    cluster: ControlPlane, chart: Chart, new_namespace: NewNamespace, tmp_path: Path
) -> None:
    namespace = new_namespace("cm-apps", restricted=False)
    secrets = new_namespace("cm-operator", restricted=False)
    config = chart.template(VALUES["cert-manager"]).config
    assert config["report"]["caBundle"] == ""
    config["sidecar"]["image"] = "registry.test/token-refresher:test"

    # Issued by a CA (the cluster's), so ca.crt and tls.crt differ, as with cert-manager.
    crt, key = cluster.issue(f"cm-{uuid.uuid4().hex[:6]}", cn="tr", server_sans=HOSTS)
    first_ca = cluster.ca_file.read_bytes()
    volume = tmp_path / "tls"
    mount(
        store_secret(
            cluster,
            secrets,
            {"tls.crt": crt.read_bytes(), "tls.key": key.read_bytes(), "ca.crt": first_ca},
        ),
        volume,
    )
    op = start_operator(
        cluster,
        tmp_path / "operator",
        config=yaml.safe_dump(config),
        tls=(volume / "tls.crt", volume / "tls.key"),
    )
    try:
        register(cluster, op, ca=first_ca, namespace=namespace)
        assert op.wait_for(
            "the first pod to be admitted", lambda: create_pod(cluster, namespace, "before")
        )
        assert report_ca(cluster, namespace, "before") == first_ca.decode()

        # cert-manager renews the Secret (here: a self-signed pair, so ca.crt is tls.crt);
        # the kubelet swaps the files; the cainjector updates the webhook's caBundle.
        renewed = write_self_signed(tmp_path, hosts=HOSTS)
        second_ca = renewed.cert_file.read_bytes()
        files = {
            "tls.crt": second_ca,
            "tls.key": renewed.key_file.read_bytes(),
            "ca.crt": second_ca,
        }
        mount(store_secret(cluster, secrets, files), volume)
        register(cluster, op, ca=second_ca, namespace=namespace)
        # Until the operator serves the renewed certificate, the apiserver refuses it.
        assert op.wait_for(
            "a pod admitted with the renewed certificate",
            lambda: create_pod(cluster, namespace, "after"),
            timeout=60,
        )
        assert report_ca(cluster, namespace, "after") == second_ca.decode()
        assert "report CA" in op.log()
        assert "changed" in op.log()
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", CONFIGURATION, check=False)
        stop_operator(op)
