"""The chart on the real kube-apiserver (tests/controlplane.py): it accepts every object in
every values mode, and an installed release wires the webhook, the CA and RBAC right.

No controller manager runs, so the Deployment never gets pods: `helm install` runs without
--wait, and nothing here relies on the operator running (test_chart_admission.py covers
what the apiserver sends to the webhook, with a stand-in server).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.chart.conftest import NewNamespace
from tests.chart.helm import CHART, VALUES, Chart
from tests.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def third_party_crds(cluster: ControlPlane) -> Iterator[None]:
    """Stand-in CRDs for cert-manager's Issuer/Certificate and the ServiceMonitor."""
    crds = str(FIXTURES / "third-party-crds.yaml")
    cluster.kubectl("apply", "-f", crds)
    cluster.kubectl("wait", "--for=condition=Established", "-f", crds, "--timeout=60s")
    yield
    cluster.kubectl("delete", "-f", crds, "--wait=false")


@pytest.mark.parametrize("mode", sorted(VALUES))
def test_apiserver_accepts_every_rendered_object_under_restricted_pod_security(
    cluster: ControlPlane,
    chart: Chart,
    new_namespace: NewNamespace,
    third_party_crds: None,
    mode: str,
) -> None:
    namespace = new_namespace("chart-dry-run")
    manifest = chart.template_text(VALUES[mode], release="dry", namespace=namespace)
    objects = [doc for doc in yaml.safe_load_all(manifest) if doc]
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)
    # The namespace enforces and warns "restricted": the test pod is enforced, the
    # Deployment's pod template is warned about.
    assert "PodSecurity" not in proc.stderr, proc.stderr
    assert proc.stdout.count("(server dry run)") == len(objects), proc.stdout


# --- an installed release --------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    fullname: str
    notes: str

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"


def get(cluster: ControlPlane, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def release(cluster: ControlPlane, new_namespace: NewNamespace) -> Iterator[Release]:
    namespace = new_namespace("chart-install")
    # No --wait: without a controller manager the Deployment never becomes ready.
    proc = cluster.helm("install", "it", str(CHART), "--namespace", namespace)
    try:
        yield Release("it", namespace, "it-token-refresher", proc.stdout)
    finally:
        # The webhook has failurePolicy Fail and no operator behind it: remove it before
        # another test creates an annotated pod.
        cluster.helm("uninstall", "it", "--namespace", namespace)


def test_install_creates_the_release_without_waiting_for_pods(
    cluster: ControlPlane, release: Release
) -> None:
    status = json.loads(
        cluster.helm("status", release.name, "-n", release.namespace, "-o", "json").stdout
    )
    assert status["info"]["status"] == "deployed"
    for kind in ("deployment", "service", "configmap", "secret", "serviceaccount", "pdb"):
        cluster.kubectl("get", kind, release.fullname + ("-tls" if kind == "secret" else ""),
                        "-n", release.namespace)  # fmt: skip
    for kind in ("clusterrole", "clusterrolebinding", "mutatingwebhookconfiguration"):
        cluster.kubectl("get", kind, release.fullname)


def test_install_notes_show_how_to_annotate_a_pod(release: Release) -> None:
    assert 'token-refresher.io/inject: "true"' in release.notes


def _webhook_ca_and_serving_cert(cluster: ControlPlane, release: Release) -> tuple[str, str]:
    config = get(cluster, "mutatingwebhookconfiguration", release.fullname)
    [webhook] = config["webhooks"]
    secret = get(cluster, "secret", f"{release.fullname}-tls", "-n", release.namespace)
    assert base64.b64decode(secret["data"]["ca.crt"]) == base64.b64decode(
        webhook["clientConfig"]["caBundle"]
    )
    return webhook["clientConfig"]["caBundle"], secret["data"]["tls.crt"]


def test_webhook_points_at_the_service_and_trusts_the_serving_certificate(
    cluster: ControlPlane, release: Release
) -> None:
    [webhook] = get(cluster, "mutatingwebhookconfiguration", release.fullname)["webhooks"]
    service = webhook["clientConfig"]["service"]
    assert service == {
        "name": release.fullname,
        "namespace": release.namespace,
        "path": "/mutate",
        "port": 443,
    }
    ports = get(cluster, "service", release.fullname, "-n", release.namespace)["spec"]["ports"]
    assert {"name": "webhook", "port": 443, "targetPort": "webhook"}.items() <= ports[0].items()

    ca_bundle, tls_crt = _webhook_ca_and_serving_cert(cluster, release)
    ca = x509.load_pem_x509_certificate(base64.b64decode(ca_bundle))
    cert = x509.load_pem_x509_certificate(base64.b64decode(tls_crt))
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{release.fullname}.{release.namespace}.svc" in names.get_values_for_type(x509.DNSName)


def test_upgrade_keeps_the_generated_certificate(cluster: ControlPlane, release: Release) -> None:
    before = _webhook_ca_and_serving_cert(cluster, release)
    cluster.helm(
        "upgrade", release.name, str(CHART), "-n", release.namespace,
        "--set", "defaults.format=json",
    )  # fmt: skip
    assert _webhook_ca_and_serving_cert(cluster, release) == before
    config = get(cluster, "configmap", release.fullname, "-n", release.namespace)
    assert yaml.safe_load(config["data"]["config.yaml"])["defaults"]["format"] == "json"


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("create", "tokenreviews.authentication.k8s.io", True),
        ("create", "events", True),
        ("patch", "events", True),
        ("create", "events.events.k8s.io", False),
        ("patch", "events.events.k8s.io", False),
        ("get", "pods", True),
        ("list", "pods", True),
        ("watch", "pods", True),
        ("get", "secrets", False),
        ("list", "secrets", False),
        ("watch", "secrets", False),
        ("patch", "pods", False),
        ("create", "pods", False),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", False),
        ("update", "mutatingwebhookconfigurations.admissionregistration.k8s.io", False),
        ("get", "configmaps", False),
    ],
)
def test_operator_service_account_may_only_do_what_it_needs(
    cluster: ControlPlane, release: Release, verb: str, resource: str, allowed: bool
) -> None:
    proc = cluster.kubectl(
        "auth", "can-i", verb, resource, "--all-namespaces",
        f"--as={release.service_account}", check=False,
    )  # fmt: skip
    assert proc.stdout.strip() == ("yes" if allowed else "no"), proc.stderr
