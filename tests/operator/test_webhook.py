"""The kopf glue: the mutate handler over a kopf Patch, and the /mutate routing server."""

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
import kopf
import pytest

from tests.controlplane import free_port
from token_refresher_operator.config import ClusterConfig, load_settings
from token_refresher_operator.devcert import write_self_signed
from token_refresher_operator.webhook import AdmissionStats, Injector, MutateServer

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


async def mutate(inj: Injector, pod: dict[str, Any]) -> list[dict[str, Any]]:
    body = kopf.Body(copy.deepcopy(pod))
    patch = kopf.Patch(body=body)
    await inj.mutate(body=body, patch=patch, dryrun=False, logger=logging.getLogger("test"))
    return list(patch.as_json_patch())


async def test_the_handler_hands_kopf_a_patch_that_injects_the_sidecar() -> None:
    inj = injector()
    ops = await mutate(inj, POD)
    pod = jsonpatch.apply_patch(POD, ops)
    assert pod["spec"]["initContainers"][0]["name"] == "token-refresher"
    assert pod["spec"]["containers"][0]["env"] == [
        {"name": "TOKEN_FILE", "value": "/var/run/secrets/token-refresher/token"}
    ]
    assert inj.stats.as_dict() == {
        "requests": 0,
        "injected": 1,
        "denied": 0,
        "skipped": 0,
        "errors": 0,
    }
    assert await mutate(inj, pod) == []
    assert inj.stats.skipped == 1


async def test_a_bad_annotation_becomes_an_admission_error_400() -> None:
    pod = copy.deepcopy(POD)
    pod["metadata"]["annotations"][P + "grant"] = "foo"
    with pytest.raises(kopf.AdmissionError) as info:
        await mutate(injector(), pod)
    assert info.value.code == 400
    assert str(info.value) == (
        "token-refresher.io/grant: must be one of client_credentials, refresh_token, "
        "token_exchange, jwt_bearer (got 'foo')"
    )


# --- the server ----------------------------------------------------------------------------


def review(path_object: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "operation": "CREATE",
            "namespace": "apps",
            "name": "app",
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "object": path_object,
        },
    }


async def test_server_routes_mutate_to_the_inject_handler_and_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert = write_self_signed(tmp_path)
    stats = AdmissionStats()
    seen: list[str | None] = []
    configs: list[dict[str, Any]] = []

    async def fn(request: Any, *, webhook: str | None = None, **_: Any) -> dict[str, Any]:
        seen.append(webhook)
        return {"response": {"uid": request["request"]["uid"], "allowed": True}}

    async def on_config(config: Any) -> None:
        configs.append(dict(config))

    port = free_port()
    server = MutateServer(
        stats=stats,
        on_client_config=on_config,
        addr="127.0.0.1",
        host="127.0.0.1",
        port=port,
        certfile=str(cert.cert_file),
        pkeyfile=str(cert.key_file),
    )
    context = ssl.create_default_context(cafile=str(cert.cert_file))
    caplog.set_level(logging.INFO, logger="token_refresher_operator.webhook")
    gen = server(fn)
    try:
        await gen.__anext__()  # listening once the first client config is yielded
        async with aiohttp.ClientSession() as session:
            base = f"https://127.0.0.1:{port}"
            async with session.post(f"{base}/mutate", json=review(POD), ssl=context) as resp:
                assert (await resp.json())["response"]["allowed"] is True
            async with session.post(f"{base}/other", json=review(POD), ssl=context) as resp:
                denied = (await resp.json())["response"]
    finally:
        await gen.aclose()
    assert seen == ["inject"]
    assert denied["allowed"] is False
    assert denied["status"] == {
        "code": 404,
        "message": "token-refresher serves /mutate, not /other",
    }
    assert stats.requests == 2
    value = stats.metrics.registry.get_sample_value
    assert value("token_refresher_operator_admission_duration_seconds_count") == 2
    assert value("token_refresher_operator_admissions_total", {"result": "error"}) == 1
    assert configs[0]["caBundle"] == base64.b64encode(cert.cert_file.read_bytes()).decode()
    assert "admission request 1: CREATE pods apps/app" in caplog.text


def test_patch_is_plain_json() -> None:
    # The operations travel base64-encoded in the AdmissionReview: they must be JSON.
    ops = asyncio.run(mutate(injector(), POD))
    assert json.loads(json.dumps(ops)) == ops
