"""The /report HTTP shell with the Kubernetes calls faked, to reach every answer and fault.

The happy path against a real kube-apiserver is in test_report_integration.py; here the
fakes inject what a real cluster will not do on demand (an unreachable API, a flood).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.support.wait import wait_until_async
from token_refresher_operator.checks import (
    INJECTED_ANNOTATION,
    POD_NAME_EXTRA,
    POD_UID_EXTRA,
    TokenReviewStatus,
)
from token_refresher_operator.devcert import write_self_signed
from token_refresher_operator.kubeapi import KubeApiError
from token_refresher_operator.manifests import Pod
from token_refresher_operator.report import MAX_BODY, RateLimiter, ReportMetrics
from token_refresher_operator.reportserver import ReportServer, make_app

AUD = "token-refresher-report"
UID_A = "11111111-1111-1111-1111-111111111111"
UID_B = "22222222-2222-2222-2222-222222222222"
TOKEN_A = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwb2QtYSJ9.c2lnbmF0dXJlLWE"
TOKEN_C = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwb2QtYyJ9.c2lnbmF0dXJlLWM"
UID_C = "33333333-3333-3333-3333-333333333333"


def status(pod: str, uid: str) -> TokenReviewStatus:
    return {
        "authenticated": True,
        "audiences": [AUD],
        "user": {
            "username": "system:serviceaccount:ns:app",
            "extra": {POD_NAME_EXTRA: [pod], POD_UID_EXTRA: [uid]},
        },
    }


def a_pod(name: str, uid: str, *, injected: bool = True) -> Pod:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": uid,
            "annotations": {INJECTED_ANNOTATION: "true"} if injected else {},
        },
        "spec": {"serviceAccountName": "app"},
    }


class FakeReviewer:
    def __init__(self) -> None:
        self.tokens = {TOKEN_A: status("a", UID_A), TOKEN_C: status("c", UID_C)}
        self.down = False

    async def review(self, token: str) -> TokenReviewStatus:
        if self.down:
            raise KubeApiError("TokenReview", ConnectionError())
        return self.tokens.get(token, {"error": "invalid bearer token", "user": {}})


class FakeKube:
    """Stands in for KubeApi's pod read."""

    def __init__(self) -> None:
        self.pods = {
            "a": a_pod("a", UID_A),
            "b": a_pod("b", UID_B),
            "c": a_pod("c", UID_C, injected=False),
        }
        self.down = False

    async def read_pod(self, namespace: str, name: str) -> Pod | None:
        if self.down:
            raise KubeApiError("reading the pod", ConnectionError())
        return self.pods.get(name)


class FakeRecorder:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, **kwargs: Any) -> None:
        self.records.append(kwargs)


def report(**changes: Any) -> dict[str, Any]:
    return {
        "namespace": "ns",
        "pod": "a",
        "uid": UID_A,
        "state": "failing",
        "error": "invalid_client",
        "description": "Client authentication failed",
        "consecutive_failures": 3,
        "since": "2026-11-22T01:00:00Z",
        **changes,
    }


def auth(token: str = TOKEN_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def fakes() -> SimpleNamespace:
    return SimpleNamespace(
        reviewer=FakeReviewer(),
        pods=FakeKube(),
        recorder=FakeRecorder(),
        metrics=ReportMetrics(),
        limiter=RateLimiter(rate=5.0, burst=20),
    )


@pytest.fixture
async def client(fakes: SimpleNamespace) -> AsyncIterator[TestClient[Any, Any]]:
    app = make_app(
        audience=AUD,
        reviewer=fakes.reviewer,
        kube=fakes.pods,
        recorder=fakes.recorder,
        limiter=fakes.limiter,
        metrics=fakes.metrics,
        clock=lambda: 0.0,
        now=lambda: dt.datetime(2026, 11, 22, 1, 5, tzinfo=dt.UTC),
    )
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_a_report_from_its_own_pod_is_accepted(
    client: TestClient[Any, Any], fakes: SimpleNamespace
) -> None:
    resp = await client.post("/report", json=report(), headers=auth())
    assert resp.status == 202
    assert await resp.json() == {"status": "accepted"}
    assert fakes.recorder.records == [
        {
            "namespace": "ns",
            "pod": "a",
            "uid": UID_A,
            "state": "failing",
            "error": "invalid_client",
            "note": "Token refresh failing (3 consecutive failures since "
            "2026-11-22T01:00:00Z): invalid_client: Client authentication failed",
            "at": dt.datetime(2026, 11, 22, 1, 5, tzinfo=dt.UTC),
            "token": None,  # the default token
        }
    ]
    assert fakes.metrics.accepted == {"failing": 1}


@pytest.mark.parametrize(
    ("headers", "data", "status", "reason"),
    [
        ({}, report(), 401, "no_token"),
        ({"Authorization": f"Basic {TOKEN_A}"}, report(), 401, "no_token"),
        ({"Authorization": "Bearer "}, report(), 401, "no_token"),
        (auth("not-a-known-token"), report(), 401, "invalid_token"),
        (auth(), "garbage", 400, "bad_body"),
        (auth(), report(state="broken"), 400, "bad_body"),
        (auth(), report(pod="b", uid=UID_B), 403, "wrong_pod"),
        (auth(), report(uid=UID_B), 403, "wrong_uid"),
        (auth(), report(namespace="other"), 403, "wrong_namespace"),
        (auth(TOKEN_C), report(pod="c", uid=UID_C), 403, "not_injected"),
    ],
)
async def test_refusals(
    client: TestClient[Any, Any],
    fakes: SimpleNamespace,
    headers: dict[str, str],
    data: Any,
    status: int,
    reason: str,
) -> None:
    raw = data.encode() if isinstance(data, str) else json.dumps(data).encode()
    resp = await client.post("/report", data=raw, headers=headers)
    assert resp.status == status
    assert (await resp.json())["error"] == reason
    assert fakes.recorder.records == []
    assert fakes.metrics.rejected == {reason: 1}
    if status == 401:
        assert resp.headers["WWW-Authenticate"] == "Bearer"


async def test_a_pod_gone_since_the_token_was_reviewed_is_refused(
    client: TestClient[Any, Any], fakes: SimpleNamespace
) -> None:
    del fakes.pods.pods["a"]
    resp = await client.post("/report", json=report(), headers=auth())
    assert resp.status == 403
    assert (await resp.json())["error"] == "pod_not_found"


async def test_a_pod_recreated_under_the_same_name_is_refused(
    client: TestClient[Any, Any], fakes: SimpleNamespace
) -> None:
    fakes.pods.pods["a"] = a_pod("a", UID_B)
    resp = await client.post("/report", json=report(), headers=auth())
    assert resp.status == 403
    assert (await resp.json())["error"] == "wrong_uid"


async def test_a_body_at_the_limit_is_read(client: TestClient[Any, Any]) -> None:
    data = report(padding="")
    filler = MAX_BODY - len(json.dumps(data).encode())
    data["padding"] = "x" * filler
    raw = json.dumps(data).encode()
    assert len(raw) == MAX_BODY
    resp = await client.post("/report", data=raw, headers=auth())
    assert resp.status == 202


async def test_a_body_over_the_limit_is_413_by_its_length(
    client: TestClient[Any, Any], fakes: SimpleNamespace
) -> None:
    resp = await client.post("/report", data=b"x" * (MAX_BODY + 1), headers=auth())
    assert resp.status == 413
    assert fakes.metrics.rejected == {"too_large": 1}


async def test_a_chunked_body_over_the_limit_is_413_while_reading(
    client: TestClient[Any, Any],
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"x" * 1024

    resp = await client.post("/report", data=chunks(), headers=auth())
    assert resp.status == 413


async def test_a_flood_from_one_pod_is_rate_limited(
    client: TestClient[Any, Any], fakes: SimpleNamespace
) -> None:
    codes = [
        (await client.post("/report", json=report(), headers=auth())).status for _ in range(25)
    ]
    assert codes == [202] * 20 + [429] * 5
    resp = await client.post("/report", json=report(), headers=auth())
    assert resp.headers["Retry-After"] == "1"
    assert len(fakes.recorder.records) == 20


async def test_an_unreachable_api_is_503(
    client: TestClient[Any, Any], fakes: SimpleNamespace
) -> None:
    fakes.reviewer.down = True
    resp = await client.post("/report", json=report(), headers=auth())
    assert (resp.status, (await resp.json())["error"]) == (503, "review_unavailable")
    fakes.reviewer.down = False
    fakes.pods.down = True
    resp = await client.post("/report", json=report(), headers=auth())
    assert (resp.status, (await resp.json())["error"]) == (503, "pod_unavailable")
    assert fakes.recorder.records == []


async def test_health_and_methods(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/report")).status == 405


async def test_no_token_reaches_the_logs(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await client.post("/report", json=report(), headers=auth())
        await client.post("/report", json=report(pod="b", uid=UID_B), headers=auth())
        await client.post("/report", json=report(error=TOKEN_A), headers=auth())
        await client.post("/report", json=report(description=TOKEN_A), headers=auth())
        await client.post("/report", json=report(), headers=auth("eyJ.unknown.token"))
    assert "eyJ" not in caplog.text
    assert "refused (wrong_pod)" in caplog.text


# --- the HTTPS server ----------------------------------------------------------------------


def write_cert(directory: Path, name: str) -> tuple[Path, Path]:
    cert = write_self_signed(directory, hosts=("127.0.0.1",))
    (directory / f"{name}.crt").write_bytes(cert.cert_file.read_bytes())
    return cert.cert_file, cert.key_file


async def healthz(port: int, ca: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"https://127.0.0.1:{port}/healthz", ssl=ctx) as resp,
    ):
        return resp.status


async def trusted_by(port: int, ca: Path) -> bool:
    """Whether the server's certificate is the one `ca` names (a handshake with it)."""
    try:
        return await healthz(port, ca) == 200
    except aiohttp.ClientConnectorCertificateError:
        return False


async def test_the_server_serves_https_and_picks_up_a_renewed_certificate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from kubernetes import client as kube

    cert, key = write_cert(tmp_path, "first")
    server = ReportServer(
        host="127.0.0.1",
        port=0,
        cert_file=cert,
        key_file=key,
        audience=AUD,
        api_client=kube.ApiClient(),
    )
    with caplog.at_level(logging.INFO):
        async with server:
            assert await healthz(server.port, tmp_path / "first.crt") == 200
            write_cert(tmp_path, "second")
            # The files are looked at during a handshake, once a second at most.
            await wait_until_async(
                "the renewed certificate served",
                lambda: trusted_by(server.port, tmp_path / "second.crt"),
                every=0.2,
            )
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await healthz(server.port, tmp_path / "first.crt")
            # A half-written renewal (a cert without its key yet) keeps the previous pair:
            # handshakes go on with it until the server has looked at the new files.
            (tmp_path / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\ntruncated")

            async def looked_and_kept() -> bool:
                assert await healthz(server.port, tmp_path / "second.crt") == 200
                return "keeping the previous certificate" in caplog.text

            await wait_until_async("the half-written renewal looked at", looked_and_kept, every=0.2)
            assert await healthz(server.port, tmp_path / "second.crt") == 200
    assert "serving the renewed certificate" in caplog.text
    assert "keeping the previous certificate" in caplog.text
    assert "report endpoint stopped: reports accepted 0 (none), rejected 0 (none)" in caplog.text


async def test_reports_are_counted_for_prometheus_by_result(
    client: TestClient[Any, Any], fakes: SimpleNamespace
) -> None:
    assert (await client.post("/report", json=report(), headers=auth())).status == 202
    assert (await client.post("/report", json=report())).status == 401
    value = fakes.metrics.exported.registry.get_sample_value
    reports = "token_refresher_operator_reports_total"
    assert value(reports, {"result": "accepted"}) == 1
    assert value(reports, {"result": "no_token"}) == 1
