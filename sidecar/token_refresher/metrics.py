"""Prometheus metrics of the sidecar's refreshers, in a registry of its own.

A private `CollectorRegistry` rather than the global one: tests run many refreshers in
one process, and the default process/platform collectors are the kubelet's job
(cAdvisor already reports container CPU and memory). Names follow the Prometheus
conventions: base units, `_total` counters, `_timestamp_seconds` gauges, so alerts can
say `token_refresher_token_expiry_timestamp_seconds - time() < 300`. Every series
about a token carries its name in the `token` label (`default` for the unnamed one), so
one alert rule covers each token of a pod.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from .settings import DEFAULT_TOKEN

__all__ = ["CONTENT_TYPE", "Metrics", "Outcome", "TokenMetrics"]

# The classic text format: what generate_latest writes, and what every scraper reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

Outcome = Literal["success", "transient_error", "permanent_error"]
_M = TypeVar("_M", Counter, Gauge, Histogram)


# The `*_created` series only say when the process started counting, which the
# kubelet's container metrics already tell; they would double the series per pod.
disable_created_metrics()  # type: ignore[no-untyped-call]

# The help text of each family, by its name after `token_refresher_` (the contract's
# names; docs/CONTRACTS.md and the README list them).
_HELP = {
    "refresh": "Token refresh attempts by outcome.",
    "refresh_duration_seconds": "Duration of one token request, including discovery.",
    "token_expiry_timestamp_seconds": (
        "Expiry (Unix time) of the token on disk; 0 when there is none."
    ),
    "last_success_timestamp_seconds": (
        "Time (Unix) of the last successful refresh; 0 before the first."
    ),
    "consecutive_failures": "Failed refresh attempts since the last success.",
    "next_refresh_timestamp_seconds": "Time (Unix) of the next planned refresh attempt.",
    "family_holder": (
        "1 for the pod (label holder) that holds the shared refresh-token family, as this "
        "pod last read it; holds is 1 when that is this pod."
    ),
    "family_last_rotation_timestamp_seconds": (
        "Time (Unix) the family's refresh token was last rotated, by any pod."
    ),
    "apiserver_requests": (
        "Requests to the kube-apiserver for the family Secret, by verb and HTTP status "
        "(0: no answer)."
    ),
}


class Metrics:
    """The sidecar's registry: one family per series, each with a `token` label.

    One registry for every token of the pod (issue 17): a family costs memory once, a
    token only its label set. `token(name)` is the view a `Refresher` writes to.
    """

    def __init__(self, *, family: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.refresh_total = self._series(Counter, "refresh", "outcome")
        self.refresh_duration = self._series(
            Histogram, "refresh_duration_seconds", buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
        )
        self.token_expiry = self._series(Gauge, "token_expiry_timestamp_seconds")
        self.last_success = self._series(Gauge, "last_success_timestamp_seconds")
        self.consecutive_failures = self._series(Gauge, "consecutive_failures")
        self.next_refresh = self._series(Gauge, "next_refresh_timestamp_seconds")
        self._tokens: dict[str, TokenMetrics] = {}
        self._family = False
        if family:
            self._family_metrics()

    def _series(self, kind: type[_M], name: str, *labels: str, **options: Any) -> _M:
        # Every family is labelled by token first; its help text is _HELP's.
        return kind(
            f"token_refresher_{name}",
            _HELP[name],
            ["token", *labels],
            registry=self.registry,
            **options,
        )

    def token(self, name: str = DEFAULT_TOKEN) -> TokenMetrics:
        """The series of one token (created with zeros on first use)."""
        view = self._tokens.get(name)
        if view is None:
            view = self._tokens[name] = TokenMetrics(self, name)
        return view

    def _family_metrics(self) -> None:
        if self._family:
            return
        self._family = True
        # Only with FAMILY_SECRET, a refresh token shared by replicas (holder.py): a
        # single pod's /metrics stays as it was.
        self.family_holder = self._series(Gauge, "family_holder", "holder", "holds")
        self.family_last_rotation = self._series(Gauge, "family_last_rotation_timestamp_seconds")
        self.apiserver_requests = self._series(Counter, "apiserver_requests", "verb", "code")

    def render(self) -> bytes:
        return generate_latest(self.registry)


class TokenMetrics:
    """One token's series in the shared `Metrics`: what a `Refresher` sets."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.shared = metrics
        self.name = name
        for outcome in ("success", "transient_error", "permanent_error"):
            metrics.refresh_total.labels(name, outcome)  # zeros, so rate() works at once
        self.refresh_duration = metrics.refresh_duration.labels(name)
        self.token_expiry = metrics.token_expiry.labels(name)
        self.last_success = metrics.last_success.labels(name)
        self.consecutive_failures = metrics.consecutive_failures.labels(name)
        self.next_refresh = metrics.next_refresh.labels(name)
        self._holder: tuple[str, str] | None = None  # this token's family_holder labels

    def observe(self, outcome: Outcome, duration: float) -> None:
        self.shared.refresh_total.labels(self.name, outcome).inc()
        self.refresh_duration.observe(duration)

    def apiserver_request(self, verb: str, status: int) -> None:
        self.shared._family_metrics()
        self.shared.apiserver_requests.labels(self.name, verb, str(status)).inc()

    def family(self, *, holder: str | None, holds: bool, rotated_at: float | None) -> None:
        shared = self.shared
        shared._family_metrics()
        # Only this token's series: another token may share no family, or another one.
        if self._holder is not None:
            shared.family_holder.remove(self.name, *self._holder)
            self._holder = None
        if holder is not None:
            self._holder = (holder, "1" if holds else "0")
            shared.family_holder.labels(self.name, *self._holder).set(1)
        shared.family_last_rotation.labels(self.name).set(rotated_at or 0)

    @property
    def registry(self) -> CollectorRegistry:
        """The shared registry (every token's series)."""
        return self.shared.registry

    def render(self) -> bytes:
        """The whole registry, every token's series."""
        return self.shared.render()
