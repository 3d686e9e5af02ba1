"""The report's pure core: body validation, the rate limit, the counters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from token_refresher_operator.report import (
    RateLimiter,
    Report,
    ReportInvalid,
    ReportMetrics,
    parse_report,
)

UID = "e3631b76-7c92-4ac7-ac2f-1f0129a1bce7"
VALID: dict[str, Any] = {
    "namespace": "billing",
    "pod": "api-7d4b9",
    "uid": UID,
    "state": "failing",
    "error": "invalid_client",
    "description": "Client authentication failed",
    "consecutive_failures": 3,
    "since": "2026-11-22T01:00:00Z",
}


def body(**changes: Any) -> bytes:
    data = {**VALID, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


def test_a_contract_report_parses() -> None:
    report = parse_report(body())
    assert report == Report(
        namespace="billing",
        pod="api-7d4b9",
        uid=UID,
        state="failing",
        error="invalid_client",
        description="Client authentication failed",
        consecutive_failures=3,
        since=datetime(2026, 11, 22, 1, 0, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"state": "recovered", "error": ..., "description": ...},
        {"state": "expired", "since": ...},
        {"error": "http_503"},
        {"error": "connect_error"},
        {"error": "urn:ietf:params:oauth:error:x"},
        {"pod": "a.b-c.d"},
        {"consecutive_failures": 0},
        {"since": "2026-11-22T02:00:00.123456+01:00"},
        {"extra_field_from_a_newer_sidecar": True},
    ],
)
def test_valid_variants_parse(changes: dict[str, Any]) -> None:
    parse_report(body(**changes))


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"", "body"),
        (b"not json", "body"),
        (b"[]", "body"),
        (b"\xff\xfe", "body"),
        (body(state="broken"), "state"),
        (body(state=...), "state"),
        (body(namespace=...), "namespace"),
        (body(namespace="Billing"), "namespace"),
        (body(namespace="a" * 64), "namespace"),
        (body(pod="-bad"), "pod"),
        (body(pod="a" * 254), "pod"),
        (body(uid="not a uid!"), "uid"),
        (body(uid=42), "uid"),
        (body(error="has space"), "error"),
        (body(error="x" * 65), "error"),
        (body(error=""), "error"),
        (body(error="eyJhbGciOi/slash"), "error"),
        (body(error=...), "error"),  # failing without an error code
        (body(consecutive_failures=-1), "consecutive_failures"),
        (body(consecutive_failures="3"), "consecutive_failures"),
        (body(consecutive_failures=3.0), "consecutive_failures"),
        (body(consecutive_failures=True), "consecutive_failures"),
        (body(since="yesterday"), "since"),
        (body(since="2026-11-22T01:00:00"), "since"),  # no time zone
        (body(description=7), "description"),
        (body(description="x" * 4097), "description"),
    ],
)
def test_invalid_bodies_are_refused_naming_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(ReportInvalid) as info:
        parse_report(raw)
    assert any(line.startswith(f"{field}:") for line in info.value.lines), info.value.lines


def test_the_refusal_never_repeats_the_value() -> None:
    secret = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    with pytest.raises(ReportInvalid) as info:
        parse_report(body(error=secret, namespace=secret))
    assert secret not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain words", "plain words"),
        ("line one\nline two\r\n", "line one line two"),
        ("tab\there", "tab here"),
        ("\x1b[31mred\x1b[0m", "[31mred [0m"),
        ("bidi \u202eevil", "bidi evil"),
        ("  padded  ", "padded"),
        ("x" * 600, "x" * 511 + "…"),
        ("é" * 512, "é" * 512),
    ],
)
def test_descriptions_lose_control_characters_and_length(raw: str, clean: str) -> None:
    assert parse_report(body(description=raw)).description == clean


def test_the_rate_limit_allows_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=5.0, burst=20)
    assert [limiter.allow("a", now=0.0) for _ in range(21)] == [True] * 20 + [False]
    assert limiter.allow("b", now=0.0)  # another pod has its own bucket
    assert not limiter.allow("a", now=0.1)
    assert limiter.allow("a", now=0.2)  # one token back after 1/5 s
    assert not limiter.allow("a", now=0.2)
    assert [limiter.allow("a", now=100.0) for _ in range(21)] == [True] * 20 + [False]


def test_the_rate_limit_forgets_refilled_buckets_when_full() -> None:
    limiter = RateLimiter(rate=1.0, burst=2, max_keys=3)
    for key in "abc":
        limiter.allow(key, now=0.0)
    limiter.allow("d", now=10.0)
    assert len(limiter._buckets) <= 3
    assert limiter.allow("d", now=10.0)


def test_metrics_summary_is_one_line() -> None:
    metrics = ReportMetrics()
    assert metrics.summary() == "reports accepted 0 (none), rejected 0 (none)"
    metrics.accepted["failing"] += 2
    metrics.rejected["wrong_pod"] += 1
    metrics.rejected["no_token"] += 3
    assert metrics.summary() == (
        "reports accepted 2 (failing 2), rejected 4 (no_token 3, wrong_pod 1)"
    )
