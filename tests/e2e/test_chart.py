"""The chart as users install it, on the real node: `helm install --wait` brings two
operator replicas to Ready in each TLS mode, `helm test` passes through the Service,
the webhook injects through that Service, a changed value rolls the operator, and
`helm uninstall` leaves nothing behind."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.chart.helm import CHART
from tests.e2e.workloads import RELEASE_NAMESPACE, injected_by_dry_run, installed
from tests.node import Node, wait_until
from token_refresher_operator.devcert import write_self_signed

pytestmark = [pytest.mark.node]

FULLNAME = "tr-token-refresher"
SERVICE_DNS = [
    f"{FULLNAME}.{RELEASE_NAMESPACE}.svc",
    f"{FULLNAME}.{RELEASE_NAMESPACE}.svc.cluster.local",
]
CRDS = Path(__file__).resolve().parents[1] / "chart" / "fixtures" / "third-party-crds.yaml"


def _tls_secret(node: Node, tmp_path: Path, name: str, *, with_ca: bool) -> str:
    """A kubernetes.io/tls Secret for the Service's DNS names; returns the CA PEM. With
    `with_ca` it carries ca.crt too, as cert-manager's Secrets do."""
    cert = write_self_signed(tmp_path, hosts=SERVICE_DNS)
    data = {
        "tls.crt": cert.cert_file.read_bytes(),
        "tls.key": cert.key_file.read_bytes(),
        **({"ca.crt": cert.cert_file.read_bytes()} if with_ca else {}),
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": RELEASE_NAMESPACE},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }
    node.kubectl("create", "namespace", RELEASE_NAMESPACE, check=False)
    node.kubectl("apply", "-f", "-", input=json.dumps(secret))
    return cert.pem


def _mode_values(node: Node, mode: str, tmp_path: Path) -> list[str]:
    if mode == "secret":
        ca = _tls_secret(node, tmp_path, "my-tls", with_ca=False)
        return [
            "--set",
            "tls.mode=secret",
            "--set",
            "tls.secret.name=my-tls",
            "--set-string",
            f"tls.secret.caBundle={ca}",
        ]
    if mode == "cert-manager":
        # No cert-manager here: its CRDs as stand-ins, and the Secret it would issue.
        node.kubectl("apply", "-f", str(CRDS))
        node.kubectl("wait", "--for=condition=Established", "-f", str(CRDS), "--timeout=60s")
        _tls_secret(node, tmp_path, f"{FULLNAME}-tls", with_ca=True)
        return ["--set", "tls.mode=cert-manager"]
    return []


def _release_objects(node: Node) -> list[str]:
    selector = "app.kubernetes.io/instance=tr"
    found = []
    for kinds, scope in (
        (
            "deployments,services,configmaps,secrets,serviceaccounts,roles,rolebindings,"
            "poddisruptionbudgets,pods",
            ["-n", RELEASE_NAMESPACE],
        ),
        ("mutatingwebhookconfigurations,clusterroles,clusterrolebindings", []),
    ):
        out = node.kubectl("get", kinds, *scope, "-l", selector, "-o", "name").stdout
        found += out.split()
    return found


@pytest.mark.parametrize("mode", ["generate", "secret", "cert-manager"])
def test_helm_install_waits_for_the_operator_and_helm_test_passes(
    node: Node, node_namespace: str, tmp_path: Path, mode: str
) -> None:
    extra = _mode_values(node, mode, tmp_path)
    with installed(node, *extra) as release:
        ready = [
            p
            for p in release.operator_pods()
            if all(c["ready"] for c in p["status"].get("containerStatuses", []))
        ]
        assert len(ready) == 2
        if mode == "cert-manager":
            # cert-manager's cainjector fills the webhook's caBundle from the Secret.
            secret = json.loads(
                node.kubectl(
                    "-n", RELEASE_NAMESPACE, "get", "secret", f"{FULLNAME}-tls", "-o", "json"
                ).stdout
            )
            patch = [
                {
                    "op": "add",
                    "path": "/webhooks/0/clientConfig/caBundle",
                    "value": secret["data"]["ca.crt"],
                }
            ]
            node.kubectl(
                "patch",
                "mutatingwebhookconfiguration",
                FULLNAME,
                "--type=json",
                "-p",
                json.dumps(patch),
            )

        tested = node.helm("test", "tr", "-n", RELEASE_NAMESPACE, "--timeout=120s", timeout=130)
        assert "Phase:          Succeeded" in tested.stdout, tested.stdout
        injected = injected_by_dry_run(node, node_namespace, "probe")
        assert [c["name"] for c in injected["spec"]["initContainers"]] == ["token-refresher"]

    wait_until("helm uninstall to remove every object", lambda: not _release_objects(node), 60)
    if mode == "cert-manager":
        node.kubectl("delete", "-f", str(CRDS), "--wait=false")
    node.kubectl("-n", RELEASE_NAMESPACE, "delete", "secret", "--all", check=False)


def test_helm_upgrade_with_a_changed_value_rolls_the_operator(node: Node) -> None:
    with installed(node) as release:
        before = {p["metadata"]["name"] for p in release.operator_pods()}

        node.helm(
            "upgrade",
            "tr",
            str(CHART),
            "-n",
            RELEASE_NAMESPACE,
            "--reuse-values",
            "--set",
            "defaults.format=json",
            "--wait",
            "--timeout=300s",
            timeout=320,
        )

        after = {p["metadata"]["name"] for p in release.operator_pods()}
        assert len(after) == 2
        assert not before & after
