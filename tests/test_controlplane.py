"""Smoke tests of the real test control plane: what injection, reports and the chart rely on.

Each test proves one capability of the local kube-apiserver the rest of the suite assumes:
pods are admitted (and stay Pending), pod-bound TokenRequest and TokenReview work, an
HTTPS webhook on 127.0.0.1 is called, RBAC answers `kubectl auth can-i`, helm installs.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.controlplane import ControlPlane
from tests.support.certs import issue, pem_cert, pem_key

pytestmark = pytest.mark.cluster


def _pod(name: str, namespace: str, sa: str = "app") -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "serviceAccountName": sa,
                "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
            },
        }
    )


@pytest.fixture
def namespace(cluster: ControlPlane) -> Iterator[str]:
    ns = f"smoke-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("-n", ns, "create", "serviceaccount", "app")
    yield ns
    # No controller-manager: the namespace never finishes terminating. Deleting it still
    # tells the apiserver to reject new objects there; nothing else depends on it.
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_kubectl_version_reports_the_real_server_version(cluster: ControlPlane) -> None:
    out = cluster.kubectl("version").stdout
    version = cluster.tools.kube_apiserver.parent.name.removeprefix("kube-apiserver-")
    assert f"Server Version: {version}" in out
    assert "v0.0.0-master" not in out


def test_a_pod_is_admitted_and_stays_pending(cluster: ControlPlane, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=_pod("p1", namespace))
    pod = json.loads(cluster.kubectl("-n", namespace, "get", "pod", "p1", "-o", "json").stdout)
    assert pod["status"]["phase"] == "Pending"
    assert pod["spec"]["serviceAccountName"] == "app"


def test_a_pod_bound_token_is_reviewed_with_the_pods_name_and_uid(
    cluster: ControlPlane, namespace: str
) -> None:
    cluster.kubectl("apply", "-f", "-", input=_pod("p2", namespace))
    uid = cluster.kubectl(
        "-n", namespace, "get", "pod", "p2", "-o", "jsonpath={.metadata.uid}"
    ).stdout
    token = cluster.kubectl(
        "-n",
        namespace,
        "create",
        "token",
        "app",
        "--audience=smoke",
        "--bound-object-kind=Pod",
        "--bound-object-name=p2",
        f"--bound-object-uid={uid}",
    ).stdout.strip()
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": ["smoke"]},
    }
    out = cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review)).stdout
    status = json.loads(out)["status"]
    assert status["authenticated"] is True
    assert status["user"]["username"] == f"system:serviceaccount:{namespace}:app"
    extra = status["user"]["extra"]
    assert extra["authentication.kubernetes.io/pod-name"] == ["p2"]
    assert extra["authentication.kubernetes.io/pod-uid"] == [uid]


class _Webhook:
    """An HTTPS admission webhook on 127.0.0.1 that records calls and adds a label."""

    def __init__(self, workdir: Path) -> None:
        ca = issue("smoke-webhook-ca", ca=None)
        cert, key = issue("127.0.0.1", ca=ca, server=True)
        (workdir / "wh.crt").write_bytes(pem_cert(cert))
        (workdir / "wh.key").write_bytes(pem_key(key))
        self.ca_pem = pem_cert(ca[0])
        self.calls: list[str] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                req = body["request"]
                calls.append(req["object"]["metadata"]["name"])
                patch = [{"op": "add", "path": "/metadata/labels", "value": {"seen": "yes"}}]
                answer = {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": {
                        "uid": req["uid"],
                        "allowed": True,
                        "patchType": "JSONPatch",
                        "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
                    },
                }
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(workdir / "wh.crt", workdir / "wh.key")
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_a_webhook_on_127_0_0_1_is_called_for_pods(
    cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    with _Webhook(tmp_path) as hook:
        name = f"smoke-{namespace}"
        config = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": "smoke.token-refresher.io",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{hook.port}/mutate",
                        "caBundle": base64.b64encode(hook.ca_pem).decode(),
                    },
                    "rules": [
                        {
                            "operations": ["CREATE"],
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "resources": ["pods"],
                        }
                    ],
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "failurePolicy": "Fail",
                }
            ],
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(config))
        try:
            cluster.kubectl("apply", "-f", "-", input=_pod("hooked", namespace))
        finally:
            cluster.kubectl("delete", "mutatingwebhookconfiguration", name)
    assert hook.calls == ["hooked"]
    labels = cluster.kubectl(
        "-n", namespace, "get", "pod", "hooked", "-o", "jsonpath={.metadata.labels.seen}"
    ).stdout
    assert labels == "yes"


def test_kubectl_auth_can_i_answers_from_rbac(cluster: ControlPlane, namespace: str) -> None:
    as_sa = f"--as=system:serviceaccount:{namespace}:app"
    before = cluster.kubectl("auth", "can-i", "get", "pods", "-n", namespace, as_sa, check=False)
    assert before.stdout.strip() == "no"
    cluster.kubectl("-n", namespace, "create", "role", "reader", "--verb=get", "--resource=pods")
    cluster.kubectl(
        "-n",
        namespace,
        "create",
        "rolebinding",
        "reader",
        "--role=reader",
        f"--serviceaccount={namespace}:app",
    )
    after = cluster.kubectl("auth", "can-i", "get", "pods", "-n", namespace, as_sa)
    assert after.stdout.strip() == "yes"
    secrets = cluster.kubectl(
        "auth", "can-i", "get", "secrets", "-n", namespace, as_sa, check=False
    )
    assert secrets.stdout.strip() == "no"


def test_helm_installs_a_small_chart(cluster: ControlPlane, namespace: str, tmp_path: Path) -> None:
    cluster.tools.need("helm")
    chart = tmp_path / "smoke"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: smoke\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n"
    )
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    (chart / "values.yaml").write_text("greeting: hello\n")
    cluster.helm("install", "smoke", str(chart), "-n", namespace, "--set", "greeting=hi")
    data = cluster.kubectl(
        "-n", namespace, "get", "configmap", "smoke", "-o", "jsonpath={.data.greeting}"
    ).stdout
    assert data == "hi"
