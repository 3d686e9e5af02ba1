"""The operator's metrics as the chart's ServiceMonitor has Prometheus scrape them: the
chart installed with `serviceMonitor.enabled` (and the Grafana dashboard) from our images,
a pod injected through the webhook, then /metrics fetched through the Service's metrics
port by a pod on the node, in the sidecar image's Python."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.workloads import (
    RELEASE_NAMESPACE,
    RESTRICTED,
    injected_by_dry_run,
    installed,
)
from tests.node import Node
from token_refresher_operator.metrics import OperatorMetrics

pytestmark = [pytest.mark.node]

FULLNAME = "tr-token-refresher"
CRDS = Path(__file__).resolve().parents[1] / "chart" / "fixtures" / "third-party-crds.yaml"
SCRAPES = 20

# Scrapes the Service SCRAPES times: it balances over the two operator replicas, and only
# one of them answered the admission. One JSON line per scrape.
SCRAPER = """
import json, sys, urllib.request
for _ in range(int(sys.argv[2])):
    with urllib.request.urlopen(sys.argv[1], timeout=10) as resp:
        line = {"type": resp.headers["Content-Type"], "text": resp.read().decode()}
    print(json.dumps(line), flush=True)
"""


def _service_metrics_port(node: Node) -> int:
    service = json.loads(
        node.kubectl("-n", RELEASE_NAMESPACE, "get", "service", FULLNAME, "-o", "json").stdout
    )
    [port] = [p for p in service["spec"]["ports"] if p["name"] == "metrics"]
    assert port["targetPort"] == "health"
    return int(port["port"])


def _scrape(node: Node, namespace: str, url: str) -> list[dict[str, str]]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "scraper", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "scraper",
                    "image": node.image("sidecar"),
                    "imagePullPolicy": "Never",
                    "command": ["python", "-u", "-c", SCRAPER, url, str(SCRAPES)],
                    "securityContext": RESTRICTED,
                    "resources": {"limits": {"memory": "64Mi"}},
                }
            ],
        },
    }
    node.kubectl("apply", "-f", "-", input=json.dumps(pod))
    node.kubectl(
        "-n",
        namespace,
        "wait",
        "pod/scraper",
        "--for=jsonpath={.status.phase}=Succeeded",
        "--timeout=120s",
        timeout=130,
    )
    logs = node.kubectl("-n", namespace, "logs", "scraper").stdout
    return [json.loads(line) for line in logs.splitlines() if line.startswith("{")]


def test_prometheus_scrapes_the_operator_metrics_through_the_service(
    node: Node, node_namespace: str
) -> None:
    node.kubectl("apply", "-f", str(CRDS))
    node.kubectl("wait", "--for=condition=Established", "-f", str(CRDS), "--timeout=60s")
    try:
        with installed(
            node, "--set", "serviceMonitor.enabled=true", "--set", "grafanaDashboard.enabled=true"
        ):
            monitor = json.loads(
                node.kubectl(
                    "-n", RELEASE_NAMESPACE, "get", "servicemonitor", FULLNAME, "-o", "json"
                ).stdout
            )
            [endpoint] = monitor["spec"]["endpoints"]
            assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
            dashboard = node.kubectl(
                "-n",
                RELEASE_NAMESPACE,
                "get",
                "configmap",
                "-l",
                "grafana_dashboard=1",
                "-o",
                "name",
            ).stdout
            assert dashboard.split() == [f"configmap/{FULLNAME}-dashboard"]

            pod = injected_by_dry_run(node, node_namespace, "counted")
            assert [c["name"] for c in pod["spec"]["initContainers"]] == ["token-refresher"]
            port = _service_metrics_port(node)
            url = f"http://{FULLNAME}.{RELEASE_NAMESPACE}.svc:{port}/metrics"
            scrapes = _scrape(node, node_namespace, url)
    finally:
        node.kubectl("delete", "-f", str(CRDS), "--wait=false", check=False)

    assert len(scrapes) == SCRAPES
    expected = {family.name for family in OperatorMetrics().registry.collect()}
    injected = []
    for scrape in scrapes:
        assert scrape["type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(scrape["text"])}
        assert expected <= set(families), expected - set(families)
        [count] = [
            s.value
            for s in families["token_refresher_operator_admission_duration_seconds"].samples
            if s.name.endswith("_count")
        ]
        injected.append(
            next(
                s.value
                for s in families["token_refresher_operator_admissions"].samples
                if s.labels == {"result": "injected"}
            )
        )
        assert count >= injected[-1]
    # The replica that admitted the pod counted it; the scrapes reached it.
    assert max(injected) >= 1, injected
