"""EventRecorder against the real kube-apiserver: what it writes is what the API accepts."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.controlplane import ControlPlane
from token_refresher_operator.events import micro_time, render_note
from token_refresher_operator.kubeapi import KubeApi
from token_refresher_operator.recorder import EventRecorder
from token_refresher_operator.series import Aggregator

pytestmark = [pytest.mark.cluster]


@pytest.fixture(scope="module")
def pod(cluster: ControlPlane) -> tuple[str, str]:
    ns = f"events-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("-n", ns, "create", "serviceaccount", "app")
    cluster.kubectl(
        "-n", ns, "run", "p", "--image=registry.invalid/app:1",
        "--overrides", '{"spec": {"serviceAccountName": "app"}}',
    )  # fmt: skip
    uid = cluster.kubectl("-n", ns, "get", "pod", "p", "-o", "jsonpath={.metadata.uid}").stdout
    return ns, uid


def events(cluster: ControlPlane, ns: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("-n", ns, "get", "events.v1.events.k8s.io", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


async def test_a_whole_second_event_time_is_accepted_and_counted(
    cluster: ControlPlane, pod: tuple[str, str]
) -> None:
    """A MicroTime with a zero fraction is what the typed client mangles (see micro_time)."""
    ns, uid = pod
    api_client = cluster.api_client()
    clock = [0.0]
    recorder = EventRecorder(
        api=KubeApi(api_client),
        instance="test",
        aggregator=Aggregator(interval=10),
        clock=lambda: clock[0],
    )
    at = datetime(2026, 11, 22, 1, 0, 0, 0, tzinfo=UTC)
    for _ in range(3):
        recorder.record(
            namespace=ns, pod="p", uid=uid, state="expired", error="invalid_grant",
            note="Token expired", at=at,
        )  # fmt: skip
    await recorder.aclose()
    api_client.close()
    assert (recorder.written, recorder.failures) == (2, 0)
    (event,) = events(cluster, ns)
    assert event["eventTime"] == "2026-11-22T01:00:00.000001Z"
    assert event["series"] == {"count": 3, "lastObservedTime": "2026-11-22T01:00:00.000001Z"}


async def test_an_event_deleted_meanwhile_is_created_again(
    cluster: ControlPlane, pod: tuple[str, str]
) -> None:
    ns, uid = pod
    api_client = cluster.api_client()
    clock = [0.0]
    recorder = EventRecorder(
        api=KubeApi(api_client),
        instance="test",
        aggregator=Aggregator(interval=10),
        clock=lambda: clock[0],
    )

    def record() -> None:
        recorder.record(
            namespace=ns, pod="p", uid=uid, state="failing", error="http_503",
            note="Token refresh failing", at=datetime.now(UTC),
        )  # fmt: skip

    record()
    await asyncio.gather(*recorder._tasks)
    (first,) = [e for e in events(cluster, ns) if e["reason"] == "TokenRefreshFailed"]
    cluster.kubectl("-n", ns, "delete", "events.v1.events.k8s.io", first["metadata"]["name"])
    record()
    clock[0] = 10.0
    await recorder.aclose()  # the patch finds nothing: 404
    assert recorder.failures == 1
    await asyncio.sleep(0.01)  # the next name is time-based
    record()
    clock[0] = 20.0
    await recorder.aclose()
    api_client.close()
    (again,) = [e for e in events(cluster, ns) if e["reason"] == "TokenRefreshFailed"]
    assert again["metadata"]["name"] != first["metadata"]["name"]
    assert again["series"]["count"] == 3


async def test_the_count_shows_in_kubectl_get_events_and_the_series_stays(
    cluster: ControlPlane, pod: tuple[str, str]
) -> None:
    """kubectl reads core/v1: count, firstTimestamp, lastTimestamp, beside the series."""
    ns, _ = pod
    cluster.kubectl(
        "-n", ns, "run", "counted", "--image=registry.invalid/app:1",
        "--overrides", '{"spec": {"serviceAccountName": "app"}}',
    )  # fmt: skip
    uid = cluster.kubectl(
        "-n", ns, "get", "pod", "counted", "-o", "jsonpath={.metadata.uid}"
    ).stdout
    api_client = cluster.api_client()
    clock = [0.0]
    recorder = EventRecorder(
        api=KubeApi(api_client),
        instance="test",
        aggregator=Aggregator(interval=10),
        clock=lambda: clock[0],
    )
    first = datetime.now(UTC).replace(microsecond=500000) - timedelta(minutes=10)
    for failures in range(1, 8):
        recorder.record(
            namespace=ns, pod="counted", uid=uid, state="failing", error="temporarily_unavailable",
            note=render_note(state="failing", error="temporarily_unavailable",
                             consecutive_failures=failures, since=first),
            at=first + timedelta(seconds=5 * failures),
        )  # fmt: skip
        await asyncio.gather(*recorder._tasks)
    clock[0] = 10.0
    await recorder.aclose()
    api_client.close()
    (event,) = [e for e in events(cluster, ns) if e["regarding"]["name"] == "counted"]
    assert event["deprecatedCount"] == 7
    last = first + timedelta(seconds=35)
    assert event["series"] == {"count": 7, "lastObservedTime": micro_time(last)}
    core = json.loads(
        cluster.kubectl("-n", ns, "get", "event", event["metadata"]["name"], "-o", "json").stdout
    )
    assert (core["count"], core["firstTimestamp"], core["lastTimestamp"]) == (
        7,
        f"{first + timedelta(seconds=5):%Y-%m-%dT%H:%M:%SZ}",
        f"{last:%Y-%m-%dT%H:%M:%SZ}",
    )
    table = cluster.kubectl("-n", ns, "get", "events", "--field-selector",
                            "involvedObject.name=counted").stdout  # fmt: skip
    # No COUNT column by default: the note says how many.
    assert "Token refresh failing (7 consecutive failures since" in table, table
    wide = cluster.kubectl("-n", ns, "get", "events", "-o", "wide", "--field-selector",
                           "involvedObject.name=counted").stdout  # fmt: skip
    header, row = wide.splitlines()[:2]
    assert row[header.index("COUNT") :].split()[0] == "7", wide
    described = cluster.kubectl("-n", ns, "describe", "pod", "counted").stdout
    assert "(x7 over " in described, described
