"""When Events are written: one per series, counts coalesced, failures never raised."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from token_refresher_operator.events import (
    CreateEvent,
    PatchSeries,
    SeriesKey,
    event_body,
    event_name,
    series_patch,
)
from token_refresher_operator.kubeapi import KubeApi
from token_refresher_operator.recorder import EventRecorder
from token_refresher_operator.series import Aggregator

T0 = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
KEY = SeriesKey("billing", "api-1", "uid-1", "TokenRefreshFailed", "invalid_client")
OTHER = SeriesKey("billing", "api-2", "uid-2", "TokenRefreshFailed", "invalid_client")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def observe(agg: Aggregator, now: float, key: SeriesKey = KEY) -> Any:
    return agg.observe(key, type="Warning", note="note", at=at(now), now=now)


def test_the_first_occurrence_creates_an_event_without_a_series() -> None:
    agg = Aggregator(interval=10)
    write = observe(agg, 0)
    assert write == CreateEvent(
        key=KEY, type="Warning", note="note", event_time=T0, count=1, last_observed=T0
    )
    body = event_body(write, name="api-1.abc", instance="operator-0")
    assert "series" not in body


def test_a_burst_of_a_hundred_is_one_create_and_one_patch() -> None:
    agg = Aggregator(interval=10)
    create = observe(agg, 0)
    agg.done(create, name="api-1.abc")
    writes = [observe(agg, i / 100) for i in range(1, 100)]
    assert writes == [None] * 99
    assert agg.due(5.0) == []  # not before the interval
    assert agg.due(10.0) == [
        PatchSeries(key=KEY, name="api-1.abc", count=100, last_observed=at(0.99), note="note")
    ]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # (now, action) -> the write kinds, in order. o = observe, d = due.
        ([(0, "o")], ["create:1"]),
        ([(0, "o"), (1, "o"), (2, "o"), (11, "o")], ["create:1", "patch:4"]),
        ([(0, "o"), (1, "o"), (10, "d"), (11, "o"), (20, "d")], ["create:1", "patch:2", "patch:3"]),
        ([(0, "o"), (12, "o"), (13, "o"), (22, "o")], ["create:1", "patch:2", "patch:4"]),
        ([(0, "o"), (10, "d"), (20, "d")], ["create:1"]),  # nothing new: nothing written
        ([(0, "o"), (400, "o")], ["create:1", "create:1"]),  # idle: a new Event
    ],
)
def test_writes_per_key(steps: list[tuple[float, str]], expected: list[str]) -> None:
    agg = Aggregator(interval=10, idle=360)
    made: list[str] = []
    for now, action in steps:
        writes = [observe(agg, now)] if action == "o" else agg.due(now)
        for write in writes:
            if write is None:
                continue
            if isinstance(write, CreateEvent):
                made.append(f"create:{write.count}")
                agg.done(write, name=f"ev{len(made)}")
            else:
                made.append(f"patch:{write.count}")
                agg.done(write)
    assert made == expected


def test_keys_are_independent() -> None:
    agg = Aggregator(interval=10)
    assert isinstance(observe(agg, 0, KEY), CreateEvent)
    assert isinstance(observe(agg, 0, OTHER), CreateEvent)


def test_one_write_in_flight_per_key() -> None:
    agg = Aggregator(interval=10)
    create = observe(agg, 0)
    assert observe(agg, 20) is None  # the create has not come back yet
    assert agg.due(30) == []
    agg.done(create, name="ev")
    assert agg.due(30) == [
        PatchSeries(key=KEY, name="ev", count=2, last_observed=at(20), note="note")
    ]


def test_a_series_update_carries_the_newest_note() -> None:
    agg = Aggregator(interval=10)
    agg.done(agg.observe(KEY, type="Warning", note="1 failure", at=at(0), now=0), name="ev")
    agg.observe(KEY, type="Warning", note="3 failures", at=at(2), now=2)
    agg.observe(KEY, type="Warning", note="2 failures", at=at(1), now=3)  # arrived late
    (patch,) = agg.due(10)
    assert isinstance(patch, PatchSeries)
    assert (patch.count, patch.note) == (3, "3 failures")


def test_a_failed_create_is_retried_as_a_create_with_the_count() -> None:
    agg = Aggregator(interval=10)
    create = observe(agg, 0)
    agg.failed(create)
    observe(agg, 1)
    assert agg.due(5) == []
    assert agg.due(10) == [
        CreateEvent(
            key=KEY, type="Warning", note="note", event_time=T0, count=2, last_observed=at(1)
        )
    ]


def test_a_vanished_event_is_created_again() -> None:
    agg = Aggregator(interval=10)
    agg.done(observe(agg, 0), name="ev")
    observe(agg, 1)
    patch = agg.due(10)[0]
    agg.failed(patch, gone=True)
    (again,) = agg.due(20)
    assert isinstance(again, CreateEvent)
    assert again.count == 2
    body = event_body(again, name="api-1.2", instance="op")
    assert body["series"] == {"count": 2, "lastObservedTime": "2026-11-22T01:00:01.000001Z"}


def test_recovery_ends_the_failure_series_with_its_final_count() -> None:
    agg = Aggregator(interval=10)
    agg.done(observe(agg, 0), name="ev")
    observe(agg, 1)
    observe(agg, 2)
    final = agg.end(namespace="billing", pod="api-1", keep="TokenRefreshRecovered")
    assert final == [PatchSeries(key=KEY, name="ev", count=3, last_observed=at(2), note="note")]
    agg.done(final[0])  # the series is gone: a late answer is ignored
    assert len(agg) == 0
    assert isinstance(observe(agg, 3), CreateEvent)  # failing again is news again


def test_end_leaves_other_pods_alone() -> None:
    agg = Aggregator(interval=10)
    observe(agg, 0, OTHER)
    assert agg.end(namespace="billing", pod="api-1") == []
    assert len(agg) == 1


def test_idle_series_are_forgotten_and_the_table_is_bounded() -> None:
    agg = Aggregator(interval=10, idle=60, max_keys=2)
    agg.done(observe(agg, 0, KEY), name="a")
    agg.done(observe(agg, 1, OTHER), name="b")
    third = SeriesKey("x", "p", "u", "TokenExpired")
    observe(agg, 2, third)
    assert len(agg) == 2
    agg.due(100)
    assert len(agg) == 1  # the two written and idle ones are gone; the third is in flight


def test_event_body_is_a_core_v1_event_on_the_pod_with_kubectls_count() -> None:
    write = CreateEvent(
        key=KEY,
        type="Warning",
        note="Token refresh failing",
        event_time=T0,
        count=1,
        last_observed=T0,
    )
    assert event_body(write, name="api-1.1", instance="h" * 200) == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "api-1.1", "namespace": "billing"},
        "eventTime": "2026-11-22T01:00:00.000001Z",
        "reportingComponent": "token-refresher",
        "reportingInstance": "h" * 128,
        "source": {"component": "token-refresher"},
        "action": "Refresh",
        "reason": "TokenRefreshFailed",
        "type": "Warning",
        "message": "Token refresh failing",
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": "api-1",
            "namespace": "billing",
            "uid": "uid-1",
        },
        "firstTimestamp": "2026-11-22T01:00:00Z",
        "lastTimestamp": "2026-11-22T01:00:00Z",
        "count": 1,
    }
    again = event_body(
        CreateEvent(
            key=KEY, type="Warning", note="n", event_time=T0, count=3, last_observed=at(3.5)
        ),
        name="api-1.2",
        instance="op",
    )
    assert again["series"] == {"count": 3, "lastObservedTime": "2026-11-22T01:00:03.500000Z"}
    assert (again["count"], again["lastTimestamp"]) == (3, "2026-11-22T01:00:03Z")
    patch = PatchSeries(key=KEY, name="api-1.1", count=7, last_observed=at(3.5), note="7 failures")
    assert series_patch(patch) == {
        "message": "7 failures",
        "series": {"count": 7, "lastObservedTime": "2026-11-22T01:00:03.500000Z"},
        "count": 7,
        "lastTimestamp": "2026-11-22T01:00:03Z",
    }


def test_event_names_fit_253_characters() -> None:
    assert event_name("api-1", 255) == "api-1.ff"
    long = event_name("p" * 253, 1795310859123456789)
    assert len(long) == 253
    assert long.endswith(f".{1795310859123456789:x}")


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
    await asyncio.sleep(0.05)
    assert [e["metadata"]["name"] for e in api.created] == ["api-1.abc"]
    assert api.patched == []
    clock.now = 10.0
    await asyncio.sleep(0.05)
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
