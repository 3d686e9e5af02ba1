"""Admission latency as the kube-apiserver measures it: its own histogram of our webhook.

`apiserver_admission_webhook_admission_duration_seconds` times each call to a webhook from
the apiserver's side (the request written, TLS, our answer, the response read), which is
what a pod's creation waits for. It is read from the apiserver's /metrics before and after
a batch; the difference is that batch's calls. Its buckets are coarse (5, 25, 100 ms ...),
so the quantiles are interpolated within a bucket as Prometheus' histogram_quantile does,
and the share of calls within 5 ms, which needs no interpolation, is given beside them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from tests.controlplane import ControlPlane

from .cluster import Cluster, Creation, PodCreator, Pods, interleaved
from .common import Plan, percentile

METRIC = "apiserver_admission_webhook_admission_duration_seconds"
WEBHOOK = "inject.token-refresher.io"

_SAMPLE = re.compile(rf"^{METRIC}_(bucket|count|sum)\{{([^}}]*)\}} (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def snapshot(cp: ControlPlane, *, webhook: str = WEBHOOK) -> dict[str, Any]:
    """Cumulative buckets, count and sum of the admit calls to `webhook` so far."""
    text = cp.kubectl("get", "--raw", "/metrics").stdout
    buckets: dict[float, float] = {}
    count = total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match[2]))
        if labels.get("name") != webhook or labels.get("type") != "admit":
            continue
        value = float(match[3])
        if match[1] == "bucket":
            le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value  # summed over `rejected`
        elif match[1] == "count":
            count += value
        else:
            total += value
    return {"buckets": buckets, "count": count, "sum": total}


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    count = buckets[-1][1]
    rank = q * count
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(le):
                return lower
            inside = cumulative - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = le, cumulative
    return lower


def between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The calls made between two snapshots: count, mean, p50, p99 and share within 5 ms."""
    les = sorted(after["buckets"])
    buckets = [(le, after["buckets"][le] - before["buckets"].get(le, 0.0)) for le in les]
    calls = after["count"] - before["count"]
    if not calls:
        return {"calls": 0}
    within_5ms = next((n for le, n in buckets if le == 0.005), None)
    return {
        "calls": int(calls),
        "mean_ms": round((after["sum"] - before["sum"]) / calls * 1000, 2),
        "p50_ms": round(_quantile(0.5, buckets) * 1000, 2),
        "p99_ms": round(_quantile(0.99, buckets) * 1000, 2),
        "share_within_5ms": None if within_5ms is None else round(within_5ms / calls, 4),
        "bucket_bounds_ms": [le * 1000 for le in les if not math.isinf(le)],
    }


class AdmissionLatency:
    """`with AdmissionLatency(cp) as latency: ...`; then `latency.result`."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.result: dict[str, Any] = {}

    def __enter__(self) -> AdmissionLatency:
        self._before = snapshot(self.cp)
        return self

    def __exit__(self, *exc: object) -> None:
        self.result = between(self._before, snapshot(self.cp))


def one_at_a_time(cp: ControlPlane, creator: PodCreator, pods: Pods, count: int) -> dict[str, Any]:
    """`count` annotated pods created one after the other: the admission path's own
    latency, without the queues of an apiserver saturated by the interleaved batches."""
    latencies: list[float] = []
    with AdmissionLatency(cp) as latency:
        for pod in pods.make("injected", count):
            _, took, _ = creator.batch([pod])
            latencies += took
    return {
        **latency.result,
        "create_p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "create_p99_ms": round(percentile(latencies, 99) * 1000, 2),
    }


def interleaved_admission(
    plan: Plan,
    cluster: Cluster,
    creator: PodCreator,
    pods: Pods,
    webhook: tuple[str, int],
    note: Callable[[str], None] | None = None,
) -> tuple[Creation, dict[str, Any]]:
    """The plan's pods of both kinds created interleaved, watching the CPU of `webhook`
    (its name and pid) and the control plane, with the apiserver's histogram of the
    webhook read around them: the creation and the histogram's latencies."""
    with AdmissionLatency(cluster.start()) as latency:
        created = interleaved(
            creator,
            pods,
            rounds=plan.pod_rounds,
            per_round=max(1, plan.pods // plan.pod_rounds),
            processes={webhook[0]: webhook[1], **cluster.control_plane_pids()},
            note=note,
        )
    return created, latency.result
