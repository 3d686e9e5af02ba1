"""Outage tolerance: while the IdP is down the last good token is served, never past its
expiry; when the outage outlasts it, the app is told clearly.

An app stand-in (`TokenReader`, a thread) reads the token file continuously for the
whole run and checks every read: never missing once there was a token, never empty or
partial, never expired — by the file's `expires_at` (the sidecar's own expiry: receipt
time + `expires_in`) and by the JWT `exp` oidc-provider signed into the token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path

import httpx2
import pytest

from tests.faults.harness import TokenReader, parse_rfc3339, wait_until
from tests.support.faultproxy import Fault
from token_refresher import Refresher, Settings
from token_refresher.report import Reporter

pytestmark = [pytest.mark.idp, pytest.mark.slow]


class ReadyWatch:
    """Polls /readyz every 50 ms in a thread and records every answer that was not 200."""

    def __init__(self, sidecar) -> None:
        self.sidecar = sidecar
        self.bad: list[tuple[float, int]] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            code = self.sidecar.readyz()
            self.polls += 1
            if code != 200:
                self.bad.append((time.time(), code))

    def __enter__(self) -> ReadyWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def next_refresh_in(sidecar) -> float:
    return sidecar.metrics()["token_refresher_next_refresh_timestamp_seconds"] - time.time()


def test_outages_shorter_than_the_margin_never_show_the_app_an_expired_token(
    oidc_provider, proxy_for, reports, sidecars
) -> None:
    # Refresh at 8..12 s (ratio 0.5 ± 0.1): at least 8 s of margin, so that even on a
    # loaded machine (a restarting IdP takes seconds there) each outage stays well inside
    # it. Nothing below times the sidecar: the checks are the app's reads and /readyz.
    ttl = 20
    margin = ttl * (1 - 0.5 - 0.1)
    idp = oidc_provider(ttl=ttl)
    proxy = proxy_for(idp)
    sidecar = sidecars.for_idp(
        idp,
        proxy=proxy,
        reports=reports,
        refresh_ratio=0.5,
        jitter=0.1,
        min_refresh_interval=0,
        backoff_initial=0.2,
        backoff_max=0.5,
        timeout=0.5,
    )

    def restart_the_idp() -> None:
        idp.stop()
        time.sleep(0.5)
        idp.start()  # the same port, keys and clients: an outage, not a new IdP

    outages = {
        "the IdP process restarts": restart_the_idp,
        "the IdP stalls": lambda: _for(proxy, Fault.stall(), 1.8),
        "the IdP answers 503": lambda: _for(
            proxy, Fault.respond(503, "", content_type="text/plain"), 1.8
        ),
    }
    with TokenReader(sidecar.output, allow_missing=False) as app, ReadyWatch(sidecar) as ready:
        wait_until("the first token", lambda: app.reads)
        for name, outage in outages.items():
            failed_before = sidecar.attempts("transient_error")
            # Begin just before the planned refresh, so that refresh meets the outage.
            time.sleep(max(0.0, next_refresh_in(sidecar) - 0.3))
            began = time.monotonic()
            outage()
            lasted = time.monotonic() - began
            assert lasted < margin - 0.5, f"{name}: the outage ({lasted:.1f} s) was not short"
            # A recovery slower than the margin would show as an expired read or a 503
            # below; this wait only bounds the test.
            sidecar.wait_status(
                f"recovery after {name}", lambda s: s["state"] == "ready", timeout=ttl * 3
            )
            assert sidecar.attempts("transient_error") > failed_before, (
                f"{name}: no refresh met the outage"
            )
        assert ready.bad == [], ready.bad
        # The watchers really watched (counts that hold on a loaded machine too: the run
        # lasts over 30 s, polls and reads are every 50 ms or so when the CPU allows).
        assert ready.polls > 50
    assert app.violations == [], app.violations
    assert app.missing == 0
    assert app.reads > 100
    assert len(app.tokens) >= 4
    assert "expired" not in reports.states()
    assert reports.states().count("recovered") >= 1
    assert reports.problems == []


def _for(proxy, fault: Fault, seconds: float) -> None:
    proxy.set(fault)
    time.sleep(seconds)
    proxy.set(Fault.passthrough())


def test_an_outage_longer_than_the_token_removes_the_file_and_says_so(
    idps, proxy_for, reports, sidecars
) -> None:
    idp = idps(3)
    proxy = proxy_for(idp)
    sidecar = sidecars.for_idp(
        idp,
        proxy=proxy,
        reports=reports,
        refresh_ratio=0.3,
        jitter=0,
        min_refresh_interval=0,
        backoff_initial=0.2,
        backoff_max=0.4,
    )
    # The file goes when the sidecar's timer fires at expiry: allow the loop 50 ms.
    with TokenReader(sidecar.output, expiry_grace=0.05) as app:
        wait_until("the first token", lambda: app.reads)
        token = json.loads(sidecar.output.read_text())
        proxy.set(Fault.refuse())
        status = sidecar.wait_status("expiry", lambda s: s["state"] == "expired", timeout=20)
        assert time.time() >= parse_rfc3339(token["expires_at"])
        assert not sidecar.output.exists()
        assert sidecar.readyz() == 503
        assert status["ready"] is False
        assert status["expires_at"] is None
        assert status["last_error"]["error"] == "connect_error"
        assert sidecar.metrics()["token_refresher_token_expiry_timestamp_seconds"] == 0
        expired = reports.wait_for("expired")
        assert expired["error"] == "connect_error"
        assert expired["consecutive_failures"] >= 2
        said = [line["msg"] for line in sidecar.logs() if line.get("level") == "error"]
        assert any(
            msg.startswith("the token expired with no successful refresh; removed") for msg in said
        ), said
        time.sleep(0.5)  # still down: still no file, still not ready
        assert not sidecar.output.exists()
        assert sidecar.readyz() == 503

        proxy.set(Fault.passthrough())
        sidecar.wait_status("recovery", lambda s: s["state"] == "ready", timeout=20)
        assert sidecar.readyz() == 200
        assert sidecar.output.exists()
        reports.wait_for("recovered")
    assert app.violations == [], app.violations
    assert app.missing > 0  # the app saw the file go away: that is how it is told
    assert reports.problems == []


class FastClock:
    """Time that passes only when slept on: a day-long outage in a second or two."""

    def __init__(self) -> None:
        self.mono = 0.0
        self.wall = 1_800_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    async def sleep(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds
        await asyncio.sleep(0)


async def test_a_day_long_outage_is_retried_for_ever_and_reported_without_crashing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 2.0 ** 1024 overflows a float: the 1025th consecutive failure (about 17 h of
    # outage at BACKOFF_MAX 60 s) crashed the refresh loop, and the reporter likewise.
    (tmp_path / "report-token").write_text("report-token")
    settings = Settings.from_env(
        {
            "TOKEN_REFRESHER_TOKEN_URL": "https://idp.example/token",
            "TOKEN_REFRESHER_CLIENT_ID": "billing",
            "TOKEN_REFRESHER_CLIENT_AUTH": "none",
            "TOKEN_REFRESHER_OUTPUT": str(tmp_path / "token"),
            "TOKEN_REFRESHER_REPORT_URL": "https://operator.example/report",
            "TOKEN_REFRESHER_REPORT_TOKEN_FILE": str(tmp_path / "report-token"),
        }
    )
    down = httpx2.MockTransport(lambda request: httpx2.Response(503))
    clock = FastClock()
    reporter = Reporter(settings, transport=down, clock=clock)
    caplog.set_level(logging.CRITICAL)  # 2000 lines of "answered HTTP 503"
    async with Refresher(settings, transport=down, clock=clock, reporter=reporter) as r:
        loop = asyncio.create_task(r.run())
        reports = asyncio.create_task(reporter.run())
        for _ in range(200_000):
            if r.consecutive_failures > 1100 or loop.done() or reports.done():
                break
            await asyncio.sleep(0)
        alive = not loop.done() and not reports.done()
        state = r.state
        r.stop()
        reports.cancel()
        results = await asyncio.gather(loop, reports, return_exceptions=True)
        await reporter.aclose()
    assert alive, results
    assert r.consecutive_failures > 1100
    assert clock.mono > 8 * 3600
    assert state == "failing"
