"""The webhook shell: `Injector.review` over AdmissionReviews, and the /mutate HTTPS server."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import pytest

from tests.controlplane import free_port
from token_refresher_operator import patch
from token_refresher_operator.config import ClusterConfig, load_settings
from token_refresher_operator.devcert import write_self_signed
from token_refresher_operator.webhook import AdmissionStats, Injector, serve_webhook

P = "token-refresher.io/"
POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "app",
        "namespace": "apps",
        "annotations": {
            P + "inject": "true",
            P + "token-url": "https://idp.example/token",
            P + "client-id": "billing",
            P + "client-secret": "billing-oauth/secret",
        },
    },
    "spec": {"containers": [{"name": "app", "image": "app:1"}]},
}


def injector() -> Injector:
    settings = load_settings({"TOKEN_REFRESHER_OPERATOR_DEV": "true"})
    return Injector(settings=settings, config=ClusterConfig())


def review(pod: dict[str, Any], *, uid: str = "u-1") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "operation": "CREATE",
            "namespace": "apps",
            "name": "app",
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "object": copy.deepcopy(pod),
        },
    }


def ops_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    assert response["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    return ops


def test_a_review_is_answered_with_the_patch_that_injects_the_sidecar() -> None:
    inj = injector()
    answer = inj.review(review(POD))
    assert (answer["apiVersion"], answer["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    assert answer["response"]["uid"] == "u-1"
    assert answer["response"]["allowed"] is True
    pod = jsonpatch.apply_patch(POD, ops_of(answer["response"]))
    assert pod["spec"]["initContainers"][0]["name"] == "token-refresher"
    assert pod["spec"]["containers"][0]["env"] == [
        {"name": "TOKEN_FILE", "value": "/var/run/secrets/token-refresher/token"}
    ]
    assert inj.stats.as_dict() == {
        "requests": 1,
        "injected": 1,
        "denied": 0,
        "skipped": 0,
        "errors": 0,
    }


def test_a_pod_that_has_the_sidecar_already_is_admitted_unchanged() -> None:
    # The apiserver's reinvocation, or a pod made from an injected pod's manifest.
    inj = injector()
    injected = jsonpatch.apply_patch(POD, ops_of(inj.review(review(POD))["response"]))
    assert inj.review(review(injected, uid="u-2"))["response"] == {"uid": "u-2", "allowed": True}
    assert (inj.stats.injected, inj.stats.skipped) == (1, 1)


@pytest.mark.parametrize("namespace", ["apps", "kube-system"])
def test_one_admission_asks_once_whether_to_leave_the_pod_alone(
    monkeypatch: pytest.MonkeyPatch, namespace: str
) -> None:
    calls: list[str] = []
    real = patch.skip_reason

    def counted(**kwargs: Any) -> str | None:
        calls.append(kwargs["namespace"])
        return real(**kwargs)

    monkeypatch.setattr(patch, "skip_reason", counted)
    request = review(POD)
    request["request"]["namespace"] = namespace
    answer = injector().review(request)["response"]
    assert calls == [namespace]
    assert ("patch" in answer) is (namespace == "apps")


def test_a_bad_annotation_denies_the_pod_with_code_400() -> None:
    pod = copy.deepcopy(POD)
    pod["metadata"]["annotations"][P + "grant"] = "foo"
    inj = injector()
    assert inj.review(review(pod))["response"] == {
        "uid": "u-1",
        "allowed": False,
        "status": {
            "code": 400,
            "message": "token-refresher.io/grant: must be one of client_credentials, "
            "refresh_token, token_exchange, jwt_bearer (got 'foo')",
        },
    }
    assert inj.stats.denied == 1


def test_the_patch_is_compact_json() -> None:
    # The operations travel base64-encoded in the AdmissionReview; the apiserver decodes them.
    text = base64.b64decode(injector().review(review(POD))["response"]["patch"]).decode()
    assert json.dumps(json.loads(text), separators=(",", ":")) == text


# --- the server ----------------------------------------------------------------------------


async def test_the_server_answers_at_mutate_counts_and_times_every_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert = write_self_signed(tmp_path)
    inj = injector()
    stop, started = asyncio.Event(), asyncio.Event()
    listening: list[bool] = []

    async def on_listening() -> None:
        listening.append(started.is_set())

    port = free_port()
    caplog.set_level(logging.INFO, logger="token_refresher_operator.webhook")
    server = asyncio.create_task(
        serve_webhook(
            injector=inj,
            host="127.0.0.1",
            port=port,
            cert_file=cert.cert_file,
            key_file=cert.key_file,
            stop=stop,
            started=started,
            on_listening=on_listening,
        )
    )
    context = ssl.create_default_context(cafile=str(cert.cert_file))
    try:
        await asyncio.wait_for(started.wait(), 10)
        async with aiohttp.ClientSession() as session:
            base = f"https://127.0.0.1:{port}"
            async with session.post(f"{base}/mutate", json=review(POD), ssl=context) as resp:
                answer = (await resp.json())["response"]
            async with session.post(f"{base}/other", json=review(POD), ssl=context) as resp:
                elsewhere = (await resp.json())["response"]
            async with session.post(f"{base}/mutate", data=b"{not json", ssl=context) as resp:
                garbage = (resp.status, await resp.text())
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
    assert listening == [False]  # DEV registers once the port listens, before `started`
    assert answer["allowed"] is True
    assert ops_of(answer)
    assert elsewhere["allowed"] is False
    assert elsewhere["status"] == {
        "code": 404,
        "message": "token-refresher serves /mutate, not /other",
    }
    assert garbage[0] == 400
    assert garbage[1].startswith("not an AdmissionReview: the body is not JSON")
    assert inj.stats.requests == 1
    value = inj.stats.metrics.registry.get_sample_value
    assert value("token_refresher_operator_admission_duration_seconds_count") == 2
    assert value("token_refresher_operator_admissions_total", {"result": "injected"}) == 1
    assert value("token_refresher_operator_admissions_total", {"result": "error"}) == 2
    assert "admission request 1: CREATE pods apps/app" in caplog.text


def test_stats_default_to_a_registry_of_their_own() -> None:
    assert AdmissionStats().metrics is not AdmissionStats().metrics
