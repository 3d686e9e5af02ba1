"""The Event recorder over a faked API: writes on the tick, the final counts, failures
logged without details and never raised, the Prometheus counts."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.wait import wait_until_async
from token_refresher_operator.kubeapi import KubeApi
from token_refresher_operator.recorder import EventRecorder
from token_refresher_operator.series import Aggregator

T0 = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


class ApiError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}: body with secret")
        self.status = status


class FakeEventsApi:
    """Stands in for CoreV1Api's Event calls: records them, fails on demand."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.patched: list[tuple[str, dict[str, Any]]] = []
        self.fail: list[Exception] = []

    def create_namespaced_event(self, namespace: str, body: dict[str, Any], **kw: Any) -> None:
        if self.fail:
            raise self.fail.pop(0)
        self.created.append(body)

    def patch_namespaced_event(
        self, name: str, namespace: str, body: dict[str, Any], **kw: Any
    ) -> None:
        assert kw["_content_type"] == "application/merge-patch+json"
        if self.fail:
            raise self.fail.pop(0)
        self.patched.append((name, body))


def faked(core: FakeEventsApi) -> KubeApi:
    kube = KubeApi(None)
    kube.core = core
    return kube


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def recorder(clock: Clock) -> tuple[EventRecorder, FakeEventsApi]:
    api = FakeEventsApi()
    rec = EventRecorder(
        api=faked(api),
        instance="op-0",
        aggregator=Aggregator(interval=10),
        clock=clock,
        clock_ns=lambda: 0xABC,
    )
    return rec, api


def record(
    rec: EventRecorder, state: str = "failing", error: str | None = "invalid_client"
) -> None:
    rec.record(
        namespace="billing",
        pod="api-1",
        uid="uid-1",
        state=state,  # type: ignore[arg-type]
        error=error,
        note=f"{state} note",
        at=T0,
    )


async def test_the_recorder_creates_then_patches_on_the_tick() -> None:
    clock = Clock()
    rec, api = recorder(clock)
    stop = asyncio.Event()
    ticker = asyncio.create_task(rec.run(stop, tick=0.01))
    for _ in range(5):
        record(rec)
    await wait_until_async("the Event created", lambda: api.created, every=0.01)
    assert [e["metadata"]["name"] for e in api.created] == ["api-1.abc"]
    assert api.patched == []  # the five are one Event, counted until the next tick
    clock.now = 10.0
    await wait_until_async("the Event patched", lambda: api.patched, every=0.01)
    assert api.patched == [
        (
            "api-1.abc",
            {
                "message": "failing note",
                "series": {"count": 5, "lastObservedTime": "2026-11-22T01:00:00.000001Z"},
                "count": 5,
                "lastTimestamp": "2026-11-22T01:00:00Z",
            },
        )
    ]
    stop.set()
    await ticker
    await rec.aclose()
    assert (rec.written, rec.failures) == (2, 0)


async def test_close_writes_pending_counts() -> None:
    clock = Clock()
    rec, api = recorder(clock)
    record(rec)
    record(rec)
    await rec.aclose()
    assert len(api.created) == 1
    assert [p[1]["series"]["count"] for p in api.patched] == [2]


async def test_write_failures_are_logged_without_details_and_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    rec, api = recorder(clock)
    api.fail = [ApiError(403), ApiError(403)]
    with caplog.at_level(logging.WARNING):
        record(rec)
        await rec.aclose()  # the pending create is tried once more on the way out
    assert api.created == []
    assert rec.failures == 2
    assert (
        "could not create Event TokenRefreshFailed for pod billing/api-1: ApiError (HTTP 403)"
        in caplog.text
    )
    assert "secret" not in caplog.text


async def test_a_404_on_patch_recreates_the_event() -> None:
    clock = Clock()
    rec, api = recorder(clock)
    record(rec)
    await asyncio.sleep(0.01)
    record(rec)
    api.fail = [ApiError(404)]
    clock.now = 10.0
    await rec.aclose()  # the patch fails: gone
    record(rec)
    clock.now = 20.0
    await rec.aclose()
    assert len(api.created) == 2
    assert api.created[1]["series"]["count"] == 3


async def test_a_recovery_is_its_own_normal_event_and_closes_the_failure() -> None:
    clock = Clock()
    rec, api = recorder(clock)
    record(rec)
    await asyncio.sleep(0.01)
    record(rec)
    record(rec, "recovered", error=None)
    await rec.aclose()
    reasons = [(e["type"], e["reason"]) for e in api.created]
    assert reasons == [("Warning", "TokenRefreshFailed"), ("Normal", "TokenRefreshRecovered")]
    assert [p[1]["series"]["count"] for p in api.patched] == [2]
    record(rec)
    await rec.aclose()
    assert len(api.created) == 3


async def test_event_writes_and_aggregated_reports_are_counted_for_prometheus() -> None:
    clock = Clock()
    rec, _ = recorder(clock)
    for _ in range(3):
        record(rec)  # one Event, the next two go into its series
    clock.now = 10.0
    await rec.aclose()
    value = rec.metrics.registry.get_sample_value
    writes = "token_refresher_operator_event_writes_total"
    assert value(writes, {"result": "created"}) == 1
    assert value(writes, {"result": "updated"}) == 1
    assert value(writes, {"result": "failed"}) == 0
    assert value("token_refresher_operator_events_aggregated_total") == 2
