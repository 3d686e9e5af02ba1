"""SidecarNotInjected: which pods get it, and only once each."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from token_refresher_operator import safetynet
from token_refresher_operator.safetynet import SidecarWatch, not_injected_message


def pod(*, annotated: bool = True, sidecar: bool = False, ns: str = "apps") -> dict[str, Any]:
    annotations = {"token-refresher.io/inject": "true"} if annotated else {}
    init = [{"name": "token-refresher", "image": "x"}] if sidecar else []
    return {
        "metadata": {"name": "p", "namespace": ns, "uid": f"uid-{ns}", "annotations": annotations},
        "spec": {"containers": [{"name": "app"}], "initContainers": init},
    }


def test_only_annotated_pods_without_the_sidecar_are_warned_about() -> None:
    assert not_injected_message(pod=pod(annotated=False), operator_namespace="tr") is None
    assert not_injected_message(pod=pod(sidecar=True), operator_namespace="tr") is None
    message = not_injected_message(pod=pod(), operator_namespace="tr")
    assert message is not None
    assert "without the token-refresher sidecar, so it gets no token" in message


@pytest.mark.parametrize("ns", ["kube-system", "tr", "monitoring"])
def test_excluded_namespaces_are_explained(ns: str) -> None:
    message = not_injected_message(
        pod=pod(ns=ns), operator_namespace="tr", excluded_namespaces=["monitoring"]
    )
    assert message is not None
    assert f"namespace {ns} is excluded from injection" in message
    assert "recreating the pod will not help" in message


async def test_one_event_per_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    posted: list[tuple[str, str]] = []

    def warn(body: Any, *, reason: str, message: str) -> None:
        posted.append((body["metadata"]["uid"], reason))

    monkeypatch.setattr(safetynet.kopf, "warn", warn)
    watch = SidecarWatch(operator_namespace="tr")
    for event in (None, "MODIFIED", "MODIFIED"):
        await watch.on_pod(body=kopf.Body(pod()), type=event)
    await watch.on_pod(body=kopf.Body(pod(sidecar=True, ns="other")), type="ADDED")
    assert posted == [("uid-apps", "SidecarNotInjected")]
    value = watch.metrics.registry.get_sample_value
    assert value("token_refresher_operator_sidecar_not_injected_pods_total") == 1
    await watch.on_pod(body=kopf.Body(pod()), type="DELETED")
    assert watch.warned == {}


def test_kopf_calls_the_watch_only_for_pods_without_the_sidecar() -> None:
    watch = SidecarWatch(operator_namespace="tr")
    assert watch.concerns(body=kopf.Body(pod())) is True
    assert watch.concerns(body=kopf.Body(pod(sidecar=True))) is False


def test_kopf_keeps_no_diff_base_for_the_watch() -> None:
    # Only change handlers read kopf's diff; building it copied every pod thrice per event.
    from token_refresher_operator.config import load_settings
    from token_refresher_operator.kopfsetup import NoDiffBase, kopf_settings

    settings = kopf_settings(load_settings({"TOKEN_REFRESHER_OPERATOR_DEV": "true"}))
    storage = settings.persistence.diffbase_storage
    assert isinstance(storage, NoDiffBase)
    assert storage.build(body=kopf.Body(pod())) == {}
    assert storage.fetch(body=kopf.Body(pod())) is None


def test_the_start_up_heap_is_left_out_of_full_collections() -> None:
    # The watch made a full pass over ~190,000 import-time objects every few hundred
    # pod events, 0.1 s each (docs/benchmarks.md); frozen, they are never walked again.
    import gc

    from token_refresher_operator.kopfsetup import freeze_startup_heap

    before = gc.get_freeze_count()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
