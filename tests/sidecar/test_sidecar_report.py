"""Failure reports to the operator: aggregated, latest-wins, never in the refresher's way."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx2
import pytest

from tests.support.fakes import FakeClock, FakeIdP, rotate, spin_until
from token_refresher import Refresher, Reporter
from token_refresher.report import ReportPolicy

REPORT_URL = "https://token-refresher.token-refresher.svc/report"
SINCE = 1_800_000_000.0


# -- the policy: which transitions become reports ---------------------------------------


def test_first_failure_is_reported_then_only_when_the_count_doubles() -> None:
    policy = ReportPolicy()
    sent = [n for n in range(1, 40) if policy.failure("http_503", None, n, SINCE)]
    assert sent == [1, 2, 4, 8, 16, 32]


def test_a_changed_error_is_reported_at_once() -> None:
    policy = ReportPolicy()
    assert policy.failure("http_503", None, 1, SINCE)
    assert policy.failure("http_503", None, 2, SINCE)
    assert policy.failure("invalid_client", "bad", 3, SINCE)
    assert not policy.failure("invalid_client", "bad", 4, SINCE)


def test_recovery_is_reported_only_after_a_reported_failure() -> None:
    policy = ReportPolicy()
    assert policy.success() is None
    policy.failure("timeout", None, 1, SINCE)
    recovered = policy.success()
    assert recovered is not None
    assert (recovered.state, recovered.since) == ("recovered", SINCE)
    assert policy.success() is None
    assert policy.failure("timeout", None, 1, SINCE + 60).state == "failing"


def test_expiry_is_reported_once_and_later_failures_keep_saying_expired() -> None:
    policy = ReportPolicy()
    policy.failure("http_503", None, 1, SINCE)
    expired = policy.expired("http_503", "down", 7, SINCE)
    assert expired is not None
    assert expired.state == "expired"
    assert policy.expired("http_503", "down", 8, SINCE) is None
    assert policy.failure("http_503", None, 14, SINCE).state == "expired"


# -- the sender ----------------------------------------------------------------------------


@pytest.fixture
def report_token(tmp_path: Path) -> Path:
    path = tmp_path / "report-token"
    path.write_text("SECRET-CANARY-report-token-1")
    return path


@pytest.fixture
def report_settings(make_settings, report_token: Path):
    return make_settings(
        report_url=REPORT_URL,
        report_token_file=report_token,
        pod_namespace="shop",
        pod_name="billing-7d9",
        pod_uid="uid-1",
    )


class Operator:
    """The operator's /report endpoint, answering from a script, then 202."""

    def __init__(self) -> None:
        self.answers: list[httpx2.Response | Exception] = []
        self.received: list[tuple[str, dict]] = []
        self.attempts = 0
        self.got = asyncio.Event()

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        self.attempts += 1
        answer = self.answers.pop(0) if self.answers else httpx2.Response(202)
        if isinstance(answer, Exception):
            raise answer
        if answer.status_code == 202:
            self.received.append((request.headers["authorization"], json.loads(request.content)))
            self.got.set()
        return answer


async def run_reporter(reporter: Reporter, until, limit: int = 5000) -> None:
    task = asyncio.create_task(reporter.run())
    try:
        await spin_until(until, limit=limit)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await reporter.aclose()


async def test_report_body_and_bearer_follow_the_contract(
    report_settings, clock, half, report_token: Path
) -> None:
    operator = Operator()
    reporter = Reporter(
        report_settings, transport=httpx2.MockTransport(operator.handler), clock=clock, random=half
    )
    reporter.failure("invalid_client", "Client authentication failed", 1, SINCE)
    await run_reporter(reporter, lambda: len(operator.received) == 1)
    bearer, body = operator.received[0]
    assert bearer == "Bearer SECRET-CANARY-report-token-1"
    assert body == {
        "namespace": "shop",
        "pod": "billing-7d9",
        "uid": "uid-1",
        "state": "failing",
        "error": "invalid_client",
        "description": "Client authentication failed",
        "consecutive_failures": 1,
        "since": "2027-01-15T08:00:00Z",
    }


async def test_the_report_token_is_reread_for_every_report(
    report_settings, clock, half, report_token: Path
) -> None:
    operator = Operator()
    reporter = Reporter(
        report_settings, transport=httpx2.MockTransport(operator.handler), clock=clock, random=half
    )
    task = asyncio.create_task(reporter.run())
    reporter.failure("timeout", None, 1, SINCE)
    await operator.got.wait()
    operator.got.clear()
    rotate(report_token, "SECRET-CANARY-report-token-2")
    reporter.success()
    await operator.got.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await reporter.aclose()
    assert [bearer for bearer, _ in operator.received] == [
        "Bearer SECRET-CANARY-report-token-1",
        "Bearer SECRET-CANARY-report-token-2",
    ]


async def test_an_unreachable_operator_is_retried_and_only_the_latest_state_sent(
    report_settings, clock: FakeClock, half
) -> None:
    operator = Operator()
    operator.answers = [
        httpx2.ConnectError("refused"),
        httpx2.Response(503),
        httpx2.Response(429, headers={"Retry-After": "20"}),
    ]
    reporter = Reporter(
        report_settings, transport=httpx2.MockTransport(operator.handler), clock=clock, random=half
    )
    reporter.failure("http_503", None, 1, SINCE)
    reporter.expired("http_503", None, 5, SINCE)  # replaces the unsent "failing"
    await run_reporter(reporter, lambda: len(operator.received) == 1)
    assert operator.attempts == 4
    assert [body["state"] for _, body in operator.received] == ["expired"]
    assert clock.sleeps == [0.5, 1.0, 20.0]


async def test_a_report_the_operator_refuses_is_dropped(report_settings, clock, half) -> None:
    operator = Operator()
    operator.answers = [httpx2.Response(403)]
    reporter = Reporter(
        report_settings, transport=httpx2.MockTransport(operator.handler), clock=clock, random=half
    )
    reporter.failure("http_503", None, 1, SINCE)
    await run_reporter(reporter, lambda: operator.attempts == 1)
    assert operator.received == []
    assert clock.sleeps == []


async def test_reports_never_delay_refreshing(report_settings, idp: FakeIdP, clock, half) -> None:
    hang = asyncio.Event()

    async def operator_hangs(request: httpx2.Request) -> httpx2.Response:
        await hang.wait()
        return httpx2.Response(202)

    reporter = Reporter(
        report_settings, transport=httpx2.MockTransport(operator_hangs), clock=clock, random=half
    )
    idp.reply(idp.error(503, "temporarily_unavailable"))
    async with Refresher(
        report_settings, transport=idp.transport, clock=clock, random=half, reporter=reporter
    ) as refresher:
        task = asyncio.create_task(reporter.run())
        assert not await refresher.refresh()
        await asyncio.sleep(0)
        async with asyncio.timeout(1):  # the operator is stuck; refreshing is not
            assert await refresher.refresh()
        assert reporter.policy.last is not None
        assert reporter.policy.last.state == "recovered"
        hang.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await reporter.aclose()


async def test_the_refresher_reports_failure_expiry_and_recovery(
    report_settings, idp: FakeIdP, clock, half
) -> None:
    operator = Operator()
    reporter = Reporter(
        report_settings, transport=httpx2.MockTransport(operator.handler), clock=clock, random=half
    )
    idp.expires_in = 60
    async with Refresher(
        report_settings, transport=idp.transport, clock=clock, random=half, reporter=reporter
    ) as refresher:
        task = asyncio.create_task(reporter.run())
        assert await refresher.refresh()
        idp.reply(idp.error(401, "invalid_client", "Client authentication failed"))
        assert not await refresher.refresh()
        await operator.got.wait()
        operator.got.clear()
        clock.advance(120)
        refresher._expire()
        await operator.got.wait()
        operator.got.clear()
        assert await refresher.refresh()
        await operator.got.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await reporter.aclose()
    states = [(b["state"], b["error"], b["consecutive_failures"]) for _, b in operator.received]
    assert states == [
        ("failing", "invalid_client", 1),
        ("expired", "invalid_client", 1),
        ("recovered", None, 0),
    ]
