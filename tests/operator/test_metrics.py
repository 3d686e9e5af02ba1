"""The operator's /metrics on its health port, scraped as Prometheus would, after a real
admission through the kube-apiserver; and the README's table of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.controlplane import ControlPlane
from tests.operator.test_injection import ANNOTATIONS, manifest
from tests.support.operator import OperatorProcess
from token_refresher_operator.metrics import OperatorMetrics

README = Path(__file__).resolve().parents[2] / "README.md"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.cluster
def test_the_health_port_serves_metrics_after_an_admission(
    cluster: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cluster.kubectl("apply", "-f", "-", input=manifest("scraped", namespace, ANNOTATIONS))
    operator.wait_for("the admission", lambda: operator.calls_for(namespace, "scraped"))
    found = samples(operator.metrics())

    def value(name: str, **labels: str) -> float:
        return found[(name, frozenset(labels.items()))]

    assert value("token_refresher_operator_admissions_total", result="injected") >= 1
    assert value("token_refresher_operator_admissions_total", result="error") == 0
    assert value("token_refresher_operator_admission_duration_seconds_count") >= 1
    assert value("token_refresher_operator_admission_duration_seconds_sum") > 0
    assert value("token_refresher_operator_reports_total", result="accepted") >= 0
    names = {name for name, _ in found}
    assert {
        "token_refresher_operator_event_writes_total",
        "token_refresher_operator_events_aggregated_total",
        "token_refresher_operator_token_reviews_total",
        "token_refresher_operator_token_review_cache_hits_total",
        "token_refresher_operator_sidecar_not_injected_pods_total",
    } <= names
    assert not any(name.endswith("_created") for name in names)
    # /healthz still answers the kubelet with the admission counters.
    assert operator.health()["admission"]["injected"] >= 1


def test_the_readme_lists_every_operator_metric() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Operator metrics") :]
    section = section[: section.index("\n#", 1)]
    listed = set(
        re.findall(r"^\| `(token_refresher_operator_\w+)(?:\{\w+\})?`", section, re.MULTILINE)
    )
    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in OperatorMetrics().registry.collect()
    }
    assert listed == exported
