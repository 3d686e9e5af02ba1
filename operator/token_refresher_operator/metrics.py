"""Prometheus metrics of the operator, served at `/metrics` on the health port.

What a person on call asks of the operator: are pods being injected or denied, and how
long does admission take (the kube-apiserver waits for us on every annotated pod); do
sidecars' failure reports get through, and if not, why; are Events written; does the
TokenReview cache keep the API quiet; did pods slip past the webhook. One registry of its
own, as in the sidecar (token_refresher.metrics), with the same conventions: base units,
`_total` counters, no `_created` series. The README's "Operator metrics" table lists them.

Each part of the operator is handed the one `OperatorMetrics` and counts what it does;
parts made without one (tests, benchmarks) get a private instance.
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

__all__ = [
    "ADMISSION_RESULTS",
    "CONTENT_TYPE",
    "AdmissionResult",
    "EventWrite",
    "OperatorMetrics",
    "ReviewResult",
]

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4

AdmissionResult = Literal["injected", "skipped", "denied", "error"]
ADMISSION_RESULTS: Final[tuple[AdmissionResult, ...]] = ("injected", "skipped", "denied", "error")
EventWrite = Literal["created", "updated", "failed"]
ReviewResult = Literal["authenticated", "unauthenticated", "error"]

# The `*_created` series only say when the process started counting.
disable_created_metrics()  # type: ignore[no-untyped-call]


class OperatorMetrics:
    """The operator's counters and the admission histogram, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.admissions = Counter(
            "token_refresher_operator_admissions",
            "Admission reviews of pods by result: injected, skipped (not annotated, "
            "already injected, excluded namespace), denied (bad annotations), error.",
            ["result"],
            registry=self.registry,
        )
        self.admission_duration = Histogram(
            "token_refresher_operator_admission_duration_seconds",
            "Time the operator took to answer one admission review.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.reports = Counter(
            "token_refresher_operator_reports",
            "Sidecar failure reports by result: accepted, or the reason they were refused.",
            ["result"],
            registry=self.registry,
        )
        self.event_writes = Counter(
            "token_refresher_operator_event_writes",
            "Event writes to the API by result: created, updated (a series count), failed.",
            ["result"],
            registry=self.registry,
        )
        self.events_aggregated = Counter(
            "token_refresher_operator_events_aggregated",
            "Reports counted into the series of an existing Event instead of a new Event.",
            registry=self.registry,
        )
        self.token_reviews = Counter(
            "token_refresher_operator_token_reviews",
            "TokenReviews sent to the kube-apiserver for report tokens, by result.",
            ["result"],
            registry=self.registry,
        )
        self.token_review_cache_hits = Counter(
            "token_refresher_operator_token_review_cache_hits",
            "Report tokens answered from the TokenReview cache, without an API call.",
            registry=self.registry,
        )
        self.sidecar_not_injected = Counter(
            "token_refresher_operator_sidecar_not_injected_pods",
            "Annotated pods found running without the sidecar (SidecarNotInjected).",
            registry=self.registry,
        )
        # Export zeros for the known label values, so rate() and alerts work from the start.
        for result in ADMISSION_RESULTS:
            self.admissions.labels(result)
        self.reports.labels("accepted")
        for write in ("created", "updated", "failed"):
            self.event_writes.labels(write)
        for review in ("authenticated", "unauthenticated", "error"):
            self.token_reviews.labels(review)

    def render(self) -> bytes:
        return generate_latest(self.registry)
