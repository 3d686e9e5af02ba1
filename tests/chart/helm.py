"""Render charts/token-refresher with the real helm binary, and parse what it renders.

`Chart.template(values)` runs `helm template` and returns the parsed objects, so a test
asserts on the YAML the cluster would receive, not on template text. `VALUES` names the
values modes the tests run against: one per TLS mode, plus the switches that change what
is rendered.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from token_refresher_operator.devcert import write_self_signed

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "token-refresher"
RELEASE = "tr"
NAMESPACE = "token-refresher"
FULLNAME = "tr-token-refresher"
# helm binaries built with `go install` default to Kubernetes v1.20 for `helm template`;
# render for the oldest version the chart supports.
KUBE_VERSION = "1.30.0"


def _self_signed_ca_pem() -> str:
    with tempfile.TemporaryDirectory() as directory:
        return write_self_signed(Path(directory)).pem


EXISTING_CA_PEM = _self_signed_ca_pem()

VALUES: dict[str, dict[str, Any]] = {
    "generate": {},
    "cert-manager": {"tls": {"mode": "cert-manager"}},
    "secret": {
        "tls": {"mode": "secret", "secret": {"name": "my-tls", "caBundle": EXISTING_CA_PEM}}
    },
    "failure-policy-ignore": {"webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 5}},
    "service-monitor": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Kubernetes"}},
    },
    "custom-defaults": {
        "defaults": {
            "issuer": "https://idp.example.com",
            "token-url": "https://idp.example.com/token",
            "grant": "token_exchange",
            "client-id": "billing",
            "client-auth": "service_account",
            "scope": "read write",
            "audience": "api://billing",
            "resource": "https://api.example.com",
            "service-account-audience": "api://AzureADTokenExchange",
            "file": "access-token",
            "format": "json",
            "mount-path": "/var/run/secrets/idp",
            "containers": "app,worker",
            "refresh-ratio": 0.5,
            # A named token every injected pod gets (issue 17).
            "audience.payments": "api://payments",
            "refresh-ratio.payments": 0.4,
        },
        "sidecar": {
            "image": {"repository": "registry.example/tr", "digest": "sha256:" + "a" * 64},
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            "volumeSizeLimit": "2Mi",
            "port": 9099,
        },
    },
}


@dataclass
class Rendered:
    """The objects one `helm template` produced."""

    objects: list[dict[str, Any]]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    @property
    def webhook(self) -> dict[str, Any]:
        webhooks = self.one("MutatingWebhookConfiguration")["webhooks"]
        assert len(webhooks) == 1
        return dict(webhooks[0])

    @property
    def operator_pod(self) -> dict[str, Any]:
        return dict(self.one("Deployment")["spec"]["template"]["spec"])

    @property
    def config(self) -> dict[str, Any]:
        """The operator's CONFIG_FILE, parsed."""
        [config] = [c for c in self.all("ConfigMap") if "config.yaml" in c.get("data", {})]
        return dict(yaml.safe_load(config["data"]["config.yaml"]))


@dataclass
class Chart:
    helm: Path
    workdir: Path

    def run(
        self, *args: str, values: dict[str, Any] | None = None
    ) -> subprocess.CompletedProcess[str]:
        fd, name = tempfile.mkstemp(suffix=".yaml", dir=self.workdir)
        values_file = Path(name)
        with open(fd, "w") as f:
            yaml.safe_dump(values or {}, f)
        return subprocess.run(
            [str(self.helm), *args, "--values", str(values_file)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def template_text(
        self,
        values: dict[str, Any] | None = None,
        *,
        release: str = RELEASE,
        namespace: str = NAMESPACE,
    ) -> str:
        proc = self.run(
            "template", release, str(CHART), "--namespace", namespace,
            "--kube-version", KUBE_VERSION, values=values,
        )  # fmt: skip
        assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
        return proc.stdout

    def template(self, values: dict[str, Any] | None = None, **kwargs: str) -> Rendered:
        docs = yaml.safe_load_all(self.template_text(values, **kwargs))
        return Rendered([d for d in docs if d])

    def lint(self, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(
            "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, values=values
        )
