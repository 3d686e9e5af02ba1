"""Events about named tokens against the real kube-apiserver: two tokens failing on one
pod are two Events, each saying which token, beside the default token's own."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.controlplane import ControlPlane
from tests.operator.test_events_integration import events, pod
from token_refresher_operator.events import render_note
from token_refresher_operator.kubeapi import KubeApi
from token_refresher_operator.recorder import EventRecorder
from token_refresher_operator.series import Aggregator

__all__ = ["pod"]  # the fixture of test_events_integration, used here too

pytestmark = [pytest.mark.cluster]


async def test_each_failing_token_of_a_pod_has_its_own_event(
    cluster: ControlPlane, pod: tuple[str, str]
) -> None:
    ns, uid = pod
    before = {e["metadata"]["name"] for e in events(cluster, ns)}
    api_client = cluster.api_client()
    recorder = EventRecorder(
        api=KubeApi(api_client), instance="test", aggregator=Aggregator(interval=10)
    )
    at = datetime(2026, 11, 22, 2, 0, 0, 1, tzinfo=UTC)
    for token, error in (
        ("partner", "http_503"),
        ("payments", "invalid_client"),
        (None, "http_503"),
    ):
        for failures in (1, 2):
            recorder.record(
                namespace=ns, pod="p", uid=uid, state="failing", error=error, at=at, token=token,
                note=render_note(
                    state="failing", error=error, consecutive_failures=failures, token=token
                ),
            )  # fmt: skip
    await recorder.aclose()
    api_client.close()
    assert recorder.failures == 0
    new = [e for e in events(cluster, ns) if e["metadata"]["name"] not in before]
    notes = sorted((e["note"], e.get("series", {}).get("count", 1)) for e in new)
    assert notes == [
        ("Token refresh failing (2 consecutive failures): http_503", 2),
        ("token partner: refresh failing (2 consecutive failures): http_503", 2),
        ("token payments: refresh failing (2 consecutive failures): invalid_client", 2),
    ]
    assert {e["reason"] for e in new} == {"TokenRefreshFailed"}
