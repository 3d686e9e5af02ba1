"""When Events are written: the first at once, repeats as one series, coalesced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from token_refresher_operator.events import (
    CreateEvent,
    PatchSeries,
    SeriesKey,
    event_body,
)
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
