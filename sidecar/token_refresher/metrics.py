"""Prometheus metrics of one refresher, in a registry of its own.

A private `CollectorRegistry` rather than the global one: tests run many refreshers in
one process, and the default process/platform collectors are the kubelet's job
(cAdvisor already reports container CPU and memory). Names follow the Prometheus
conventions: base units, `_total` counters, `_timestamp_seconds` gauges, so alerts can
say `token_refresher_token_expiry_timestamp_seconds - time() < 300`.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

__all__ = ["CONTENT_TYPE", "Metrics", "Outcome"]

# The classic text format: what generate_latest writes, and what every scraper reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

Outcome = Literal["success", "transient_error", "permanent_error"]


# The `*_created` series only say when the process started counting, which the
# kubelet's container metrics already tell; they would double the series per pod.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self, *, family: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.refresh_total = Counter(
            "token_refresher_refresh",
            "Token refresh attempts by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("success", "transient_error", "permanent_error"):
            self.refresh_total.labels(outcome)  # export zeros, so rate() works from the start
        self.refresh_duration = Histogram(
            "token_refresher_refresh_duration_seconds",
            "Duration of one token request, including discovery.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.token_expiry = Gauge(
            "token_refresher_token_expiry_timestamp_seconds",
            "Expiry (Unix time) of the token on disk; 0 when there is none.",
            registry=self.registry,
        )
        self.last_success = Gauge(
            "token_refresher_last_success_timestamp_seconds",
            "Time (Unix) of the last successful refresh; 0 before the first.",
            registry=self.registry,
        )
        self.consecutive_failures = Gauge(
            "token_refresher_consecutive_failures",
            "Failed refresh attempts since the last success.",
            registry=self.registry,
        )
        self.next_refresh = Gauge(
            "token_refresher_next_refresh_timestamp_seconds",
            "Time (Unix) of the next planned refresh attempt.",
            registry=self.registry,
        )
        self._family = False
        if family:
            self._family_metrics()

    def _family_metrics(self) -> None:
        if self._family:
            return
        self._family = True
        # Only with FAMILY_SECRET, a refresh token shared by replicas (holder.py): a
        # single pod's /metrics stays as it was.
        self.family_holder = Gauge(
            "token_refresher_family_holder",
            "1 for the pod (label holder) that holds the shared refresh-token family, as "
            "this pod last read it; holds is 1 when that is this pod.",
            ["holder", "holds"],
            registry=self.registry,
        )
        self.family_last_rotation = Gauge(
            "token_refresher_family_last_rotation_timestamp_seconds",
            "Time (Unix) the family's refresh token was last rotated, by any pod.",
            registry=self.registry,
        )
        self.apiserver_requests = Counter(
            "token_refresher_apiserver_requests",
            "Requests to the kube-apiserver for the family Secret, by verb and HTTP status "
            "(0: no answer).",
            ["verb", "code"],
            registry=self.registry,
        )

    def apiserver_request(self, verb: str, status: int) -> None:
        self._family_metrics()
        self.apiserver_requests.labels(verb, str(status)).inc()

    def family(self, *, holder: str | None, holds: bool, rotated_at: float | None) -> None:
        self._family_metrics()
        self.family_holder.clear()
        if holder is not None:
            self.family_holder.labels(holder, "1" if holds else "0").set(1)
        self.family_last_rotation.set(rotated_at or 0)

    def observe(self, outcome: Outcome, duration: float) -> None:
        self.refresh_total.labels(outcome).inc()
        self.refresh_duration.observe(duration)

    def render(self) -> bytes:
        return generate_latest(self.registry)
