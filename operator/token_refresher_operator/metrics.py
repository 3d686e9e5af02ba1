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
        # Counters: name (after `token_refresher_operator_`), help, label if any.
        counter = self._counter
        self.admissions = counter(
            "admissions",
            "Admission reviews of pods by result: injected, skipped (not annotated, "
            "already injected, excluded namespace), denied (bad annotations), error.",
            "result",
        )
        self.admission_duration = Histogram(
            "token_refresher_operator_admission_duration_seconds",
            "Time the operator took to answer one admission review.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.reports = counter(
            "reports",
            "Sidecar failure reports by result: accepted, or the reason they were refused.",
            "result",
        )
        self.event_writes = counter(
            "event_writes",
            "Event writes to the API by result: created, updated (a series count), failed.",
            "result",
        )
        self.events_aggregated = counter(
            "events_aggregated",
            "Reports counted into the series of an existing Event instead of a new Event.",
        )
        self.token_reviews = counter(
            "token_reviews",
            "TokenReviews sent to the kube-apiserver for report tokens, by result.",
            "result",
        )
        self.token_review_cache_hits = counter(
            "token_review_cache_hits",
            "Report tokens answered from the TokenReview cache, without an API call.",
        )
        self.sidecar_not_injected = counter(
            "sidecar_not_injected_pods",
            "Annotated pods found running without the sidecar (SidecarNotInjected).",
        )
        # Export zeros for the known label values, so rate() and alerts work from the start.
        for result in ADMISSION_RESULTS:
            self.admissions.labels(result)
        self.reports.labels("accepted")
        for write in ("created", "updated", "failed"):
            self.event_writes.labels(write)
        for review in ("authenticated", "unauthenticated", "error"):
            self.token_reviews.labels(review)

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        return Counter(
            f"token_refresher_operator_{name}", documentation, labels, registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
