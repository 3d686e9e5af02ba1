"""Prometheus metrics of one refresher, and their text exposition.

Six metrics with fixed names, kept in plain floats and served in the classic text format
(version 0.0.4) that every scraper reads. Written here rather than with
prometheus_client: importing that package loads its HTTP and WSGI servers, ASGI glue,
gzip and the process and platform collectors — about 2 MiB of a sidecar that aims at
40 MiB (docs/benchmarks.md) — for a dozen numbers. Names follow the Prometheus
conventions: base units, `_total` counters, `_timestamp_seconds` gauges, so alerts can say
`token_refresher_token_expiry_timestamp_seconds - time() < 300`. Each refresher has
metrics of its own (tests run many in one process); container CPU and memory are the
kubelet's to report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["CONTENT_TYPE", "MetricFamily", "Metrics", "Outcome", "Registry", "Sample"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Outcome = Literal["success", "transient_error", "permanent_error"]
OUTCOMES: tuple[Outcome, ...] = ("success", "transient_error", "permanent_error")
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class MetricFamily:
    """One metric as the Prometheus data model has it: a counter's name without `_total`."""

    name: str
    type: Literal["counter", "gauge", "histogram"]
    documentation: str
    samples: list[Sample]


class _Collector(Protocol):
    def collect(self) -> MetricFamily: ...


class Gauge:
    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def collect(self) -> MetricFamily:
        return MetricFamily(
            self.name, "gauge", self.documentation, [Sample(self.name, {}, self.value)]
        )


class OutcomeCounter:
    """A counter with one label, `outcome`; every outcome is exported from the start (as
    zero), so `rate()` works before the first failure."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.values: dict[str, float] = dict.fromkeys(OUTCOMES, 0.0)

    def inc(self, outcome: Outcome) -> None:
        self.values[outcome] += 1.0

    def collect(self) -> MetricFamily:
        samples = [
            Sample(f"{self.name}_total", {"outcome": outcome}, value)
            for outcome, value in self.values.items()
        ]
        return MetricFamily(self.name, "counter", self.documentation, samples)


class Histogram:
    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.buckets = tuple(buckets)
        self._counts = [0] * len(self.buckets)  # per bucket, not cumulative
        self._count = 0
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._count += 1
        self._sum += value
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self._counts[index] += 1
                break

    def collect(self) -> MetricFamily:
        samples = []
        cumulative = 0
        for bound, count in zip(self.buckets, self._counts, strict=True):
            cumulative += count
            samples.append(Sample(f"{self.name}_bucket", {"le": _number(bound)}, cumulative))
        samples += [
            Sample(f"{self.name}_bucket", {"le": "+Inf"}, self._count),
            Sample(f"{self.name}_count", {}, self._count),
            Sample(f"{self.name}_sum", {}, self._sum),
        ]
        return MetricFamily(self.name, "histogram", self.documentation, samples)


class Registry:
    """The metrics of one refresher, in exposition order."""

    def __init__(self, collectors: Iterable[_Collector]) -> None:
        self._collectors = list(collectors)

    def collect(self) -> list[MetricFamily]:
        return [collector.collect() for collector in self._collectors]


class Metrics:
    def __init__(self) -> None:
        self.refresh_total = OutcomeCounter(
            "token_refresher_refresh", "Token refresh attempts by outcome."
        )
        self.refresh_duration = Histogram(
            "token_refresher_refresh_duration_seconds",
            "Duration of one token request, including discovery.",
            DURATION_BUCKETS,
        )
        self.token_expiry = Gauge(
            "token_refresher_token_expiry_timestamp_seconds",
            "Expiry (Unix time) of the token on disk; 0 when there is none.",
        )
        self.last_success = Gauge(
            "token_refresher_last_success_timestamp_seconds",
            "Time (Unix) of the last successful refresh; 0 before the first.",
        )
        self.consecutive_failures = Gauge(
            "token_refresher_consecutive_failures",
            "Failed refresh attempts since the last success.",
        )
        self.next_refresh = Gauge(
            "token_refresher_next_refresh_timestamp_seconds",
            "Time (Unix) of the next planned refresh attempt.",
        )
        self.registry = Registry(
            [
                self.refresh_total,
                self.refresh_duration,
                self.token_expiry,
                self.last_success,
                self.consecutive_failures,
                self.next_refresh,
            ]
        )

    def observe(self, outcome: Outcome, duration: float) -> None:
        self.refresh_total.inc(outcome)
        self.refresh_duration.observe(duration)

    def render(self) -> bytes:
        return render(self.registry.collect())


def render(families: Iterable[MetricFamily]) -> bytes:
    """The text exposition format, version 0.0.4."""
    lines = []
    for family in families:
        name = f"{family.name}_total" if family.type == "counter" else family.name
        lines.append(f"# HELP {name} {_escape(family.documentation, quote=False)}")
        lines.append(f"# TYPE {name} {family.type}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape(v, quote=True)}"' for k, v in sample.labels.items())
            where = f"{{{labels}}}" if labels else ""
            lines.append(f"{sample.name}{where} {_number(sample.value)}")
    return ("\n".join(lines) + "\n").encode()


def _escape(text: str, *, quote: bool) -> str:
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    return text.replace('"', r"\"") if quote else text


def _number(value: float) -> str:
    """A float as Go's strconv formats it, which is what Prometheus itself writes:
    `1.0`, `0.05`, `1.8000036e+09`, `+Inf`."""
    value = float(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text
