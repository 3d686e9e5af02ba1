"""The sidecar's endpoints over a real socket: probes, status and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2
import pytest

from tests.support.fakes import FakeIdP
from token_refresher import Refresher, StatusServer


@pytest.fixture
async def served(
    make_settings, idp: FakeIdP, clock, half
) -> AsyncIterator[tuple[Refresher, httpx2.AsyncClient]]:
    refresher = Refresher(make_settings(), transport=idp.transport, clock=clock, random=half)
    async with refresher, StatusServer(refresher, "127.0.0.1", 0) as server:
        base_url = f"http://127.0.0.1:{server.port}"
        async with httpx2.AsyncClient(base_url=base_url, trust_env=False) as client:
            yield refresher, client


async def test_readyz_is_503_before_the_first_token_and_200_after(served) -> None:
    refresher, client = served
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert "starting" in response.text
    assert await refresher.refresh()
    assert (await client.get("/readyz")).status_code == 200


async def test_readyz_turns_503_when_the_token_expires(served, clock) -> None:
    refresher, client = served
    assert await refresher.refresh()
    clock.advance(3601)
    assert (await client.get("/readyz")).status_code == 503


async def test_healthz_follows_the_refresh_loop(served) -> None:
    refresher, client = served
    assert (await client.get("/healthz")).status_code == 503
    task = asyncio.create_task(refresher.run())
    await asyncio.sleep(0)
    assert (await client.get("/healthz")).status_code == 200
    refresher.stop()
    await task
    assert (await client.get("/healthz")).status_code == 503


async def test_status_tells_the_state_and_no_secret(served, idp: FakeIdP) -> None:
    refresher, client = served
    assert await refresher.refresh()
    idp.reply(idp.error(401, "invalid_client", "bad secret"))
    assert not await refresher.refresh()
    response = await client.get("/status")
    assert response.headers["content-type"] == "application/json"
    status = response.json()
    assert set(status) >= {
        "state",
        "expires_at",
        "last_success",
        "consecutive_failures",
        "last_error",
        "next_refresh_at",
        "refresh_count",
    }
    assert status["state"] == "retrying"
    assert status["consecutive_failures"] == 1
    assert status["refresh_count"] == 1
    assert status["last_error"]["error"] == "invalid_client"
    assert status["expires_at"] == "2027-01-15T09:00:00Z"
    assert "SECRET-CANARY" not in response.text


async def test_metrics_are_prometheus_text(served) -> None:
    refresher, client = served
    assert await refresher.refresh()
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    for name in (
        'token_refresher_refresh_total{outcome="success",token="default"} 1.0',
        'token_refresher_refresh_duration_seconds_bucket{le="0.05",token="default"}',
        'token_refresher_token_expiry_timestamp_seconds{token="default"} 1.8000036e+09',
        'token_refresher_last_success_timestamp_seconds{token="default"} 1.8e+09',
        'token_refresher_consecutive_failures{token="default"} 0.0',
        'token_refresher_next_refresh_timestamp_seconds{token="default"} 1.80000189e+09',
    ):
        assert name in text


async def test_unknown_paths_and_methods(served) -> None:
    _, client = served
    assert (await client.get("/nope")).status_code == 404
    assert (await client.post("/status")).status_code == 405
    head = await client.head("/healthz")
    assert head.content == b""


async def test_garbage_and_silent_clients_do_not_break_the_server(served) -> None:
    _, client = served
    port = client.base_url.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"NONSENSE\r\n\r\n")
    await writer.drain()
    assert (await reader.read()).startswith(b"HTTP/1.1 400")
    writer.close()
    await writer.wait_closed()
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()  # hangs up without a word
    await writer.wait_closed()
    assert (await client.get("/readyz")).status_code == 503


async def test_readyz_wait_answers_the_moment_the_first_token_is_written(served) -> None:
    refresher, client = served
    probe = asyncio.create_task(client.get("/readyz?wait=30"))
    await asyncio.sleep(0.2)
    assert not probe.done()  # held open while there is no token, not answered 503
    assert await refresher.refresh()
    response = await asyncio.wait_for(probe, 10)  # far sooner than its 30 s
    assert response.status_code == 200


async def test_readyz_wait_gives_up_with_the_usual_503(served) -> None:
    _, client = served
    response = await client.get("/readyz?wait=0.3")
    assert response.status_code == 503
    assert "no valid token: default (starting)" in response.text


async def test_readyz_wait_when_ready_answers_at_once_and_bad_waits_are_refused(served) -> None:
    refresher, client = served
    for bad in ("soon", "-1", "61", "nan"):
        response = await client.get(f"/readyz?wait={bad}")
        assert response.status_code == 400, bad
        assert "wait must be seconds from 0 to 60" in response.text
    assert (await client.get("/readyz?wait=0")).status_code == 503
    assert (await asyncio.wait_for(client.post("/readyz?wait=60"), 10)).status_code == 405
    assert await refresher.refresh()
    assert (await asyncio.wait_for(client.get("/readyz?wait=60"), 10)).status_code == 200
