"""Reports and Events about named tokens (issue 17): the report's `token`, notes that
start `token <name>: `, and one series per pod and token."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.operator.test_recorder import FakeEventsApi, faked
from tests.operator.test_reportserver import auth, client, fakes, report
from token_refresher.settings import TOKEN_NAME
from token_refresher_operator.events import CreateEvent, SeriesKey, render_note
from token_refresher_operator.recorder import EventRecorder
from token_refresher_operator.report import ReportInvalid, parse_report
from token_refresher_operator.series import Aggregator

__all__ = ["client", "fakes"]  # fixtures of test_reportserver, used here too

SINCE = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


def body(**changes: Any) -> bytes:
    return json.dumps(report(**changes)).encode()


@pytest.mark.parametrize(("sent", "token"), [("payments", "payments"), ("default", None)])
def test_a_report_names_its_token_and_default_is_the_unnamed_one(
    sent: str, token: str | None
) -> None:
    assert parse_report(body(token=sent)).token == token


def test_a_report_without_a_token_is_about_the_default_token() -> None:
    assert parse_report(body()).token is None


@pytest.mark.parametrize("token", ["Payments", "pay_ments", "-x", "", "x" * 64, "a.b"])
def test_a_token_that_is_no_name_is_a_bad_report_saying_why_without_echoing_it(
    token: str,
) -> None:
    with pytest.raises(ReportInvalid) as exc:
        parse_report(body(token=token))
    [line] = exc.value.lines
    assert line.startswith("token: must be a token name (a DNS label"), line
    assert "or 'default'" in line
    if token:
        assert token not in line.removeprefix("token: ")


BAD_TOKEN = (
    "token: must be a token name (a DNS label: at most 63 lower-case letters, digits and "
    "'-', starting and ending with a letter or digit) or 'default'"
)


@given(st.text(max_size=80))
@settings(max_examples=200, deadline=None)
@example("payments")
@example("default")
def test_any_token_is_a_name_or_a_400_line_that_does_not_echo_it(token: str) -> None:
    if TOKEN_NAME.fullmatch(token) is not None and len(token) <= 63:
        assert parse_report(body(token=token)).token == (None if token == "default" else token)
        return
    with pytest.raises(ReportInvalid) as exc:
        parse_report(body(token=token))
    # One fixed sentence, whatever the token: nothing of it is echoed.
    assert exc.value.lines == [BAD_TOKEN]


def test_a_token_that_is_no_string_is_a_bad_report() -> None:
    with pytest.raises(ReportInvalid, match="token: Input should be a valid string"):
        parse_report(body(token=7))


NOTE = {"error": "invalid_client", "description": "bad secret", "consecutive_failures": 3}


@pytest.mark.parametrize(
    ("state", "named"),
    [
        (
            "failing",
            "token payments: refresh failing (3 consecutive failures since "
            "2026-11-22T01:00:00Z): invalid_client: bad secret",
        ),
        (
            "expired",
            "token payments: expired with no successful refresh (3 consecutive failures since "
            "2026-11-22T01:00:00Z); last error: invalid_client: bad secret",
        ),
        (
            "recovered",
            "token payments: refresh recovered after 3 consecutive failures (failing since "
            "2026-11-22T01:00:00Z); last error was invalid_client: bad secret",
        ),
    ],
)
def test_a_named_tokens_note_starts_with_its_name(state: Any, named: str) -> None:
    assert render_note(state=state, since=SINCE, token="payments", **NOTE) == named


@pytest.mark.parametrize("state", ["failing", "expired", "recovered"])
def test_the_default_tokens_note_reads_as_before(state: Any) -> None:
    note = render_note(state=state, since=SINCE, **NOTE)
    assert note.startswith("Token ")
    assert render_note(state=state, since=SINCE, token=None, **NOTE) == note


def test_a_named_tokens_long_note_stays_within_the_limit() -> None:
    note = render_note(state="failing", error="x", description="d " * 600, token="a" * 63)
    assert note.startswith("token " + "a" * 63 + ": refresh failing")
    assert len(note.encode()) <= 1024


def key(token: str | None, reason: str = "TokenRefreshFailed") -> SeriesKey:
    return SeriesKey("billing", "api-1", "uid-1", reason, "invalid_client", token)


def test_two_tokens_failing_on_one_pod_are_two_series() -> None:
    agg = Aggregator(interval=10)
    writes = [
        agg.observe(key(token), type="Warning", note=f"{token}", at=SINCE, now=0)
        for token in ("payments", "partner", None)
    ]
    assert [type(w) for w in writes] == [CreateEvent] * 3
    assert len(agg) == 3


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def recorder() -> tuple[EventRecorder, FakeEventsApi]:
    api = FakeEventsApi()
    rec = EventRecorder(
        api=faked(api),
        instance="op-0",
        aggregator=Aggregator(interval=10),
        clock=Clock(),
        clock_ns=lambda: 0xABC,
    )
    return rec, api


def record(rec: EventRecorder, state: Any, token: str | None) -> None:
    rec.record(
        namespace="billing",
        pod="api-1",
        uid="uid-1",
        state=state,
        error="invalid_client" if state != "recovered" else None,
        note=render_note(state=state, error="invalid_client", token=token),
        at=SINCE,
        token=token,
    )


async def settle(rec: EventRecorder) -> None:
    """Wait for the writes in flight (aclose would also flush and forget every series)."""
    await asyncio.gather(*rec._tasks)


async def test_a_recovered_token_ends_its_own_series_only() -> None:
    rec, api = recorder()
    record(rec, "failing", "partner")
    record(rec, "failing", "payments")
    await settle(rec)
    assert [e["message"].split(":")[0] for e in api.created] == [
        "token partner",
        "token payments",
    ]
    record(rec, "recovered", "payments")
    await settle(rec)
    # partner's failure goes on in its series; payments' next failure would be news.
    assert {k.token for k in rec.aggregator._series} == {"partner", "payments"}
    assert {k.reason for k in rec.aggregator._series if k.token == "payments"} == {
        "TokenRefreshRecovered"
    }
    record(rec, "failing", "partner")
    await settle(rec)
    assert len(api.created) == 3  # two failures and one recovery; the repeat is counted
    assert api.created[-1]["message"].startswith("token payments: refresh recovered")


async def test_the_endpoint_passes_the_token_and_its_note_on(
    client: TestClient[Any, Any], fakes: SimpleNamespace
) -> None:
    resp = await client.post("/report", json=report(token="payments"), headers=auth())
    assert resp.status == 202
    [recorded] = fakes.recorder.records
    assert recorded["token"] == "payments"
    assert recorded["note"].startswith("token payments: refresh failing (3 consecutive failures")


async def test_the_endpoint_refuses_a_bad_token_with_a_400_saying_why(
    client: TestClient[Any, Any], fakes: SimpleNamespace
) -> None:
    resp = await client.post("/report", json=report(token="Pay_ments"), headers=auth())
    assert resp.status == 400
    answer = await resp.json()
    assert answer["error"] == "bad_body"
    assert answer["message"].startswith("not a report: token: must be a token name")
    assert fakes.recorder.records == []
