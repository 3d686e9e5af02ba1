"""The refresher under faults: outages, rate limits, timeouts, rejected credentials.

A `MockTransport` plays the IdP and a fake clock plays time, so an hour-long outage runs
in milliseconds and every delay can be checked exactly (`half` pins the jitter).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from pathlib import Path

import httpx2
import pytest

from tests.support.fakes import FakeClock, FakeIdP, drive, rotate
from token_refresher import Refresher

HTML_503 = httpx2.Response(503, html="<html><body>Service Unavailable</body></html>")


def refresher(settings, idp: FakeIdP, clock: FakeClock, half) -> Refresher:
    return Refresher(settings, transport=idp.transport, clock=clock, random=half)


def gaps(idp: FakeIdP) -> list[float]:
    return [round(b.at - a.at, 6) for a, b in itertools.pairwise(idp.posts)]


def samples(r: Refresher, name: str) -> dict[str, float]:
    return {
        s.labels.get("outcome", ""): s.value
        for metric in r.metrics.registry.collect()
        for s in metric.samples
        if s.name == name
    }


async def test_server_errors_are_retried_with_backoff_until_success(
    make_settings, idp, clock, half
) -> None:
    idp.reply(HTML_503, httpx2.Response(502, text="bad gateway"))
    async with refresher(make_settings(), idp, clock, half) as r:
        await drive(r, lambda: r.refresh_count == 1)
        assert r.consecutive_failures == 0
        assert r.ready
        assert samples(r, "token_refresher_refresh_total") == {
            "success": 1.0,
            "transient_error": 2.0,
            "permanent_error": 0.0,
        }
    assert gaps(idp) == [0.5, 1.0]  # full jitter drawn at the middle: 1/2 of 1 s, 2 s
    assert r.settings.output.read_text() == "SECRET-CANARY-access-1"


async def test_429_retry_after_is_honoured(make_settings, idp, clock, half) -> None:
    idp.reply(idp.error(429, "slow_down", **{"Retry-After": "30"}))
    async with refresher(make_settings(), idp, clock, half) as r:
        await drive(r, lambda: r.refresh_count == 1)
    assert gaps(idp) == [30.0]


async def test_503_retry_after_as_http_date_is_honoured(make_settings, idp, clock, half) -> None:
    clock.wall = 1445412480.0  # 2015-10-21T07:28:00Z
    idp.reply(httpx2.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:29:00 GMT"}))
    async with refresher(make_settings(), idp, clock, half) as r:
        await drive(r, lambda: r.refresh_count == 1)
    assert gaps(idp) == [60.0]


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (httpx2.ReadTimeout("timed out"), "timeout"),
        (httpx2.ConnectTimeout("timed out"), "timeout"),
        (httpx2.ConnectError("[Errno 111] Connection refused"), "connect_error"),
        (httpx2.RemoteProtocolError("peer closed connection"), "transport_error"),
    ],
)
async def test_network_faults_are_transient(make_settings, idp, clock, half, fault, code) -> None:
    idp.reply(fault)
    async with refresher(make_settings(), idp, clock, half) as r:
        assert not await r.refresh()
        status = r.status()
        assert status["last_error"]["error"] == code
        assert status["last_error"]["permanent"] is False
        assert status["state"] == "failing"
        assert await r.refresh()


async def test_a_hanging_idp_times_out_in_real_time(make_settings, clock, half) -> None:
    async def hang(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    settings = make_settings(timeout=0.2)
    async with Refresher(
        settings, transport=httpx2.MockTransport(hang), clock=clock, random=half
    ) as r:
        assert not await r.refresh()
    assert r.status()["last_error"]["error"] == "timeout"
    assert "did not answer within 0.2 s" in r.status()["last_error"]["message"]


async def test_invalid_client_is_permanent_and_retried_at_growing_intervals_to_a_ceiling(
    make_settings, idp, clock, half, caplog
) -> None:
    idp.reply(*[idp.error(401, "invalid_client", "Client authentication failed")] * 8)
    settings = make_settings(permanent_error_interval=200)
    with caplog.at_level(logging.WARNING):
        async with refresher(settings, idp, clock, half) as r:
            await drive(r, lambda: r.refresh_count == 1)
    # 5 s doubling up to PERMANENT_ERROR_INTERVAL, each 5 % short (`half` draws the middle
    # of the 0..10 % spread); the ceiling is never exceeded.
    assert gaps(idp) == [4.75, 9.5, 19.0, 38.0, 76.0, 152.0, 190.0, 190.0]
    errors = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert errors[0].getMessage() == (
        "token endpoint https://idp.example/token rejected client 'billing': "
        "invalid_client (Client authentication failed)"
    )
    assert errors[0].permanent is True


async def test_invalid_grant_falls_back_to_the_primary_grant(
    make_settings, idp, clock, half, tmp_path: Path
) -> None:
    bootstrap = tmp_path / "refresh-token"
    bootstrap.write_text("RT-dead")
    settings = make_settings(grant="client_credentials", refresh_token_file=bootstrap)
    idp.reply(
        idp.error(400, "invalid_grant", "Token is not active"), idp.token(refresh_token="RT-new")
    )
    async with refresher(settings, idp, clock, half) as r:
        assert await r.refresh()  # one attempt: the fallback is immediate
        assert await r.refresh()
    grants = [(s.form["grant_type"], s.form.get("refresh_token")) for s in idp.posts]
    assert grants == [
        ("refresh_token", "RT-dead"),
        ("client_credentials", None),
        ("refresh_token", "RT-new"),
    ]


async def test_invalid_grant_without_fallback_is_permanent_until_a_new_token_arrives(
    make_settings, idp, clock, half, tmp_path: Path
) -> None:
    bootstrap = tmp_path / "refresh-token"
    bootstrap.write_text("RT-dead")
    settings = make_settings(grant="refresh_token", refresh_token_file=bootstrap)
    idp.reply(idp.error(400, "invalid_grant"))
    async with refresher(settings, idp, clock, half) as r:
        assert not await r.refresh()
        assert r.status()["last_error"]["permanent"] is True
        assert r.next_refresh_in == pytest.approx(4.75)  # the first step of the ladder
        # Nothing left to try: the IdP is not asked again with the dead token.
        assert not await r.refresh()
        assert len(idp.posts) == 1
        assert r.status()["last_error"]["error"] == "invalid_grant"
        assert "put a new one in" in r.status()["last_error"]["message"]
        rotate(bootstrap, "RT-fresh")
        assert await r.refresh()
    assert idp.posts[-1].form["refresh_token"] == "RT-fresh"


async def test_a_failed_refresh_never_touches_a_valid_token(
    make_settings, idp, clock, half
) -> None:
    async with refresher(make_settings(), idp, clock, half) as r:
        assert await r.refresh()
        before = r.settings.output.read_bytes()
        idp.reply(HTML_503, idp.error(401, "invalid_client"))
        assert not await r.refresh()
        assert not await r.refresh()
        assert r.settings.output.read_bytes() == before
        assert r.ready
        assert r.state == "retrying"


async def test_expired_token_is_removed_and_not_ready(make_settings, idp, clock, half) -> None:
    idp.expires_in = 60
    async with refresher(make_settings(), idp, clock, half) as r:
        assert await r.refresh()
        received = clock.mono
        idp.reply(*[HTML_503] * 100)
        await drive(r, lambda: r.state == "expired")
        assert not r.settings.output.exists()
        assert not r.ready
    retries = [s.at - received for s in idp.posts[1:]]
    # First planned refresh at 31.5 s (the middle of the first token's start-up window,
    # 0.25..0.8 x 60); retries get denser towards 60 s...
    assert retries[0] == pytest.approx(31.5)
    assert sum(1 for t in retries if t < 60) >= 5
    # ...but never closer than the floor (half the initial backoff).
    assert min(gaps(idp)) >= 0.5


async def test_on_expiry_keep_leaves_the_file_but_is_not_ready(
    make_settings, idp, clock, half
) -> None:
    idp.expires_in = 60
    async with refresher(make_settings(on_expiry="keep"), idp, clock, half) as r:
        assert await r.refresh()
        idp.reply(*[HTML_503] * 100)
        await drive(r, lambda: r.state == "expired")
        assert r.settings.output.read_text() == "SECRET-CANARY-access-1"
        assert not r.ready


async def test_refreshes_follow_the_ratio_on_the_monotonic_clock(
    make_settings, idp, clock, half
) -> None:
    async with refresher(make_settings(), idp, clock, half) as r:
        await drive(r, lambda: len(idp.posts) == 3)
    # The first token of the process is refreshed from the wider start-up window
    # (0.25..0.8 x 3600, drawn at its middle), every later one at 0.7 x 3600.
    assert gaps(idp) == [1890.0, 2520.0]


async def test_a_wall_clock_jump_neither_stampedes_nor_expires(
    make_settings, idp, clock, half
) -> None:
    async with refresher(make_settings(), idp, clock, half) as r:
        assert await r.refresh()
        planned = r.next_refresh_in
        clock.wall += 7 * 3600  # NTP step forward, far past the token's expiry
        assert r.ready
        assert r.next_refresh_in == planned
        clock.wall -= 14 * 3600  # and back, far before it was issued
        assert r.ready
        assert r.next_refresh_in == planned
        await drive(r, lambda: len(idp.posts) == 2)
    assert gaps(idp) == [1890.0]  # the first token's start-up window, drawn at its middle


async def test_json_output_and_status_expiry_follow_receipt(
    make_settings, idp, clock, half
) -> None:
    async with refresher(make_settings(format="json"), idp, clock, half) as r:
        assert await r.refresh()
        document = json.loads(r.settings.output.read_text())
    assert document["expires_at"] == r.status()["expires_at"] == "2027-01-15T09:00:00Z"
    assert document["expires_in"] == 3600


async def test_a_valid_token_left_by_a_previous_run_is_adopted(
    make_settings, idp, clock, half
) -> None:
    settings = make_settings(format="json")
    async with refresher(settings, idp, clock, half) as r:
        assert await r.refresh()
    clock.advance(600)
    idp.reply(HTML_503)
    async with refresher(settings, idp, clock, half) as r:
        await drive(r, lambda: r.consecutive_failures == 1)
        assert r.ready  # still the previous run's token, 50 minutes left
        assert r.status()["expires_at"] == "2027-01-15T09:00:00Z"


async def test_a_stale_token_left_by_a_previous_run_is_removed(
    make_settings, idp, clock, half
) -> None:
    settings = make_settings()
    settings.output.write_text("opaque-token-of-unknown-age")
    idp.reply(HTML_503)
    async with refresher(settings, idp, clock, half) as r:
        await drive(r, lambda: len(idp.posts) == 1)
        assert not settings.output.exists()
        assert not r.ready


async def test_disk_trouble_is_a_retried_failure(
    make_settings, idp, clock, half, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    async with refresher(make_settings(), idp, clock, half) as r:
        monkeypatch.setattr(os, "write", full)
        assert not await r.refresh()
        monkeypatch.setattr(os, "write", real_write)
        assert r.status()["last_error"]["error"] == "output_error"
        assert "no space left" in r.status()["last_error"]["message"]
        assert await r.refresh()


async def test_discovery_finds_the_token_endpoint(make_settings, clock, half) -> None:
    seen: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(f"{request.method} {request.url}")
        if request.method == "GET":
            if len(seen) == 1:
                return httpx2.Response(500)
            return httpx2.Response(
                200,
                json={
                    "issuer": "https://idp.example/realms/x",
                    "token_endpoint": "https://idp.example/realms/x/protocol/token",
                },
            )
        return httpx2.Response(200, json={"access_token": "tok", "expires_in": 60})

    settings = make_settings(token_url=None, issuer="https://idp.example/realms/x")
    async with Refresher(
        settings, transport=httpx2.MockTransport(handler), clock=clock, random=half
    ) as r:
        assert not await r.refresh()
        assert r.status()["last_error"]["error"] == "http_500"
        assert "OIDC discovery at https://idp.example/realms/x/.well-known/" in str(
            r.status()["last_error"]["message"]
        )
        assert await r.refresh()
        assert await r.refresh()
        assert r.status()["token_endpoint"] == "https://idp.example/realms/x/protocol/token"
    assert seen == [
        "GET https://idp.example/realms/x/.well-known/openid-configuration",
        "GET https://idp.example/realms/x/.well-known/openid-configuration",
        "POST https://idp.example/realms/x/protocol/token",
        "POST https://idp.example/realms/x/protocol/token",
    ]


async def test_stop_abandons_an_attempt_in_flight_without_writing(
    make_settings, clock, half
) -> None:
    entered = asyncio.Event()

    async def slow(request: httpx2.Request) -> httpx2.Response:
        entered.set()
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    async with Refresher(
        make_settings(), transport=httpx2.MockTransport(slow), clock=clock, random=half
    ) as r:
        task = asyncio.create_task(r.run())
        await entered.wait()
        r.stop()
        async with asyncio.timeout(1):
            await task
        assert r.state == "stopped"
    assert list(r.settings.output.parent.iterdir()) == []
