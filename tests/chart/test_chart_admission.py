"""Which pods the kube-apiserver sends to the chart's webhook, decided by the real apiserver.

The chart's MutatingWebhookConfiguration is applied as rendered, except that its
clientConfig points to a stand-in HTTPS server on 127.0.0.1 (there is no operator pod
and no cluster DNS here). The stand-in records every AdmissionReview and allows the pod,
so the tests see exactly what the rules, matchConditions (CEL on the inject annotation)
and namespaceSelector let through. Pods are created with --dry-run=server: admission runs
in full (sideEffects: None) and nothing is stored.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.chart.conftest import NewNamespace
from tests.chart.helm import Chart
from tests.controlplane import ControlPlane
from tests.support import free_port, wait_until
from tests.support.certs import loopback_tls

pytestmark = pytest.mark.cluster

INJECT = "token-refresher.io/inject"


@dataclass
class StandIn:
    """An HTTPS admission webhook that allows every pod and remembers which it saw."""

    url: str
    ca_pem: bytes
    seen: list[str] = field(default_factory=list)  # "namespace/name" of each pod


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    pki = loopback_tls(tmp_path_factory.mktemp("webhook"), ca_name="webhook-test-ca")
    ca_pem, cert_file, key_file = pki.ca_pem, pki.cert_file, pki.key_file
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            request = review["request"]
            seen.append(f"{request['namespace']}/{request['object']['metadata']['name']}")
            body = json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": {"uid": request["uid"], "allowed": True},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test reads `seen`, not the access log

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield StandIn(f"https://127.0.0.1:{server.server_address[1]}", ca_pem, seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def pod(namespace: str, annotations: dict[str, str] | None = None) -> tuple[str, str]:
    """(name, manifest) of a minimal pod."""
    name = f"p-{uuid.uuid4().hex[:8]}"
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations is not None:
        metadata["annotations"] = annotations
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
    }
    return name, json.dumps(manifest)


def create_pod(cluster: ControlPlane, manifest: str) -> Any:
    return cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", input=manifest, check=False, timeout=30
    )


@dataclass(frozen=True)
class Namespaces:
    release: str
    app: str


@pytest.fixture(scope="module")
def namespaces(cluster: ControlPlane, new_namespace: NewNamespace) -> Namespaces:
    # kube-system exists from the start but has no `default` ServiceAccount yet.
    cluster.kubectl(
        "apply", "-f", "-",
        input='{"apiVersion": "v1", "kind": "ServiceAccount", '
        '"metadata": {"name": "default", "namespace": "kube-system"}}',
    )  # fmt: skip
    return Namespaces(
        new_namespace("chart-adm-release", restricted=False),
        new_namespace("chart-adm-app", restricted=False),
    )


def apply_webhook(
    cluster: ControlPlane,
    chart: Chart,
    namespaces: Namespaces,
    *,
    url: str,
    ca_pem: bytes,
    values: dict[str, Any] | None = None,
) -> str:
    """Apply the chart's webhook configuration, re-pointed at `url`; return its name."""
    rendered = chart.template(values, release="adm", namespace=namespaces.release)
    config = rendered.one("MutatingWebhookConfiguration")
    name = f"chart-admission-{uuid.uuid4().hex[:6]}"
    config["metadata"] = {"name": name}
    config["webhooks"][0]["clientConfig"] = {
        "url": f"{url}/mutate",
        "caBundle": base64.b64encode(ca_pem).decode(),
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(config))
    return name


def wait_until_called(cluster: ControlPlane, stand_in: StandIn, namespace: str) -> None:
    """The apiserver picks a new webhook configuration up within a moment."""

    def called() -> bool:
        name, manifest = pod(namespace, {INJECT: "true"})
        create_pod(cluster, manifest)
        return f"{namespace}/{name}" in stand_in.seen

    wait_until("the apiserver to call the webhook", called, 30)


@pytest.fixture(scope="module")
def chart_webhook(
    cluster: ControlPlane, chart: Chart, namespaces: Namespaces, stand_in: StandIn
) -> Iterator[StandIn]:
    name = apply_webhook(cluster, chart, namespaces, url=stand_in.url, ca_pem=stand_in.ca_pem)
    try:
        wait_until_called(cluster, stand_in, namespaces.app)
        yield stand_in
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", name)


def test_pod_annotated_inject_true_is_sent_to_the_webhook(
    cluster: ControlPlane, chart_webhook: StandIn, namespaces: Namespaces
) -> None:
    name, manifest = pod(namespaces.app, {INJECT: "true", "other": "x"})
    assert create_pod(cluster, manifest).returncode == 0
    assert f"{namespaces.app}/{name}" in chart_webhook.seen


@pytest.mark.parametrize(
    "annotations",
    [None, {}, {"other": "true"}, {INJECT: "false"}, {INJECT: "True"}, {INJECT: "yes"}],
    ids=["no-annotations", "empty", "other-annotation", "false", "True", "yes"],
)
def test_pod_without_inject_true_never_reaches_the_webhook(
    cluster: ControlPlane,
    chart_webhook: StandIn,
    namespaces: Namespaces,
    annotations: dict[str, str] | None,
) -> None:
    name, manifest = pod(namespaces.app, annotations)
    assert create_pod(cluster, manifest).returncode == 0
    assert f"{namespaces.app}/{name}" not in chart_webhook.seen


@pytest.mark.parametrize("where", ["release", "kube-system"])
def test_annotated_pod_in_an_excluded_namespace_never_reaches_the_webhook(
    cluster: ControlPlane, chart_webhook: StandIn, namespaces: Namespaces, where: str
) -> None:
    namespace = namespaces.release if where == "release" else "kube-system"
    name, manifest = pod(namespace, {INJECT: "true"})
    assert create_pod(cluster, manifest).returncode == 0
    assert f"{namespace}/{name}" not in chart_webhook.seen


def test_annotated_pod_is_denied_while_the_webhook_is_down(
    cluster: ControlPlane, chart: Chart, namespaces: Namespaces, stand_in: StandIn
) -> None:
    # failurePolicy Fail (the default): no pod silently runs without its token.
    closed = f"https://127.0.0.1:{free_port()}"
    name = apply_webhook(cluster, chart, namespaces, url=closed, ca_pem=stand_in.ca_pem)
    try:

        def refused() -> Any:
            proc = create_pod(cluster, pod(namespaces.app, {INJECT: "true"})[1])
            return proc if proc.returncode != 0 else None

        # The apiserver may still hold the previous configuration for a moment.
        denied = wait_until("the apiserver to refuse an annotated pod", refused, 30)
        assert 'failed calling webhook "inject.token-refresher.io"' in denied.stderr
        assert create_pod(cluster, pod(namespaces.app)[1]).returncode == 0
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", name)
