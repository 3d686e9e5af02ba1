"""The /metrics exposition: valid Prometheus text with the documented names and values."""

from __future__ import annotations

from typing import Any

import pytest

from token_refresher.metrics import CONTENT_TYPE, Metrics

parser = pytest.importorskip("prometheus_client.parser")


def families(metrics: Metrics) -> dict[str, Any]:
    text = metrics.render().decode()
    return {family.name: family for family in parser.text_string_to_metric_families(text)}


def test_the_exposition_parses_as_prometheus_text() -> None:
    metrics = Metrics()
    metrics.token().observe("success", 0.12)
    metrics.token().token_expiry.set(1_800_003_600)
    parsed = families(metrics)
    assert set(parsed) == {
        "token_refresher_refresh",
        "token_refresher_refresh_duration_seconds",
        "token_refresher_token_expiry_timestamp_seconds",
        "token_refresher_last_success_timestamp_seconds",
        "token_refresher_consecutive_failures",
        "token_refresher_next_refresh_timestamp_seconds",
    }
    expiry = parsed["token_refresher_token_expiry_timestamp_seconds"]
    assert [(s.labels, s.value) for s in expiry.samples] == [({"token": "default"}, 1_800_003_600)]
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_every_outcome_is_exported_from_the_start() -> None:
    metrics = Metrics()
    metrics.token("default")
    counter = families(metrics)["token_refresher_refresh"]
    values = {s.labels["outcome"]: s.value for s in counter.samples}
    assert values == {"success": 0.0, "transient_error": 0.0, "permanent_error": 0.0}


def test_histogram_buckets_are_cumulative_and_inf_counts_everything() -> None:
    metrics = Metrics()
    for duration in (0.01, 0.3, 0.3, 99.0):  # the last beyond every finite bucket
        metrics.token().observe("transient_error", duration)
    histogram = families(metrics)["token_refresher_refresh_duration_seconds"]
    buckets = {s.labels["le"]: s.value for s in histogram.samples if s.name.endswith("_bucket")}
    assert buckets["0.05"] == 1
    assert buckets["0.5"] == 3
    assert buckets["30.0"] == 3
    assert buckets["+Inf"] == 4
    text = metrics.render().decode()
    assert 'token_refresher_refresh_duration_seconds_count{token="default"} 4.0' in text
    assert 'token_refresher_refresh_duration_seconds_sum{token="default"} 99.61' in text


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0, "0.0"), (1, "1.0"), (0.05, "0.05"), (1.8e9, "1.8e+09"), (1_800_003_600, "1.8000036e+09")],
)
def test_numbers_are_written_as_prometheus_writes_them(value: float, shown: str) -> None:
    metrics = Metrics()
    metrics.token().last_success.set(value)
    line = f'token_refresher_last_success_timestamp_seconds{{token="default"}} {shown}\n'
    assert line in metrics.render().decode()
