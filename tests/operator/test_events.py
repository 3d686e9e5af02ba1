"""What an Event says and looks like: the note, the scrubbing of anything like a credential,
the core/v1 body and the series patch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from token_refresher_operator.events import (
    NOTE_LIMIT,
    CreateEvent,
    PatchSeries,
    SeriesKey,
    event_body,
    event_name,
    micro_time,
    reason_for,
    redact,
    render_note,
    series_patch,
)

JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ"
    ".eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YmlsbGluZzphcHAifQ"
    ".c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
)
SINCE = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Client authentication failed", "Client authentication failed"),
        ("invalid_client", "invalid_client"),
        ("HTTP 503 from https://idp.example/token", "HTTP 503 from https://idp.example/token"),
        (f"token {JWT} expired", "token [redacted] expired"),
        (f"bad assertion:{JWT}", "bad assertion:[redacted]"),
        (JWT, "[redacted]"),
        ("header.payload12.signature", "header.payload12.signature"),  # too short to be one
        ("abcdefgh.ijklmnop.qrstuvwx", "[redacted]"),
        ("Authorization: Bearer abc.defgh", "Authorization: Bearer [redacted]"),
        ("Basic dXNlcjpwYXNz", "Basic [redacted]"),
        ("Bearer token missing", "Bearer token missing"),
        ("basic authentication failed", "basic authentication failed"),
        ("token endpoint returned 503", "token endpoint returned 503"),
        ("the token is expired", "the token is expired"),
        ("token=abc", "token=[redacted]"),
        ("client_secret=hunter2&x=1", "client_secret=[redacted]&x=1"),
        ('refresh_token: "r-123"', 'refresh_token: "[redacted]"'),
        ("password=p", "password=[redacted]"),
        ("got 8xK2mQ9vL3nR7tY1wZ5aB4cD6eF0gH2jK", "got [redacted]"),
        ("uid 3b0e2a8c-9d1f-4e7a-b6c5-1a2b3c4d5e6f", "uid [redacted]"),
        ("short abc123", "short abc123"),
        (
            "a-very-long-hyphenated-error-name-without-digits",
            "a-very-long-hyphenated-error-name-without-digits",
        ),
    ],
)
def test_credentials_are_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("state", "kind"),
    [
        ("failing", ("Warning", "TokenRefreshFailed")),
        ("recovered", ("Normal", "TokenRefreshRecovered")),
        ("expired", ("Warning", "TokenExpired")),
    ],
)
def test_reasons_follow_the_design(state: str, kind: tuple[str, str]) -> None:
    assert reason_for(state) == kind  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "note"),
    [
        (
            dict(
                state="failing",
                error="invalid_client",
                description="Client authentication failed",
                consecutive_failures=3,
                since=SINCE,
            ),
            "Token refresh failing (3 consecutive failures since 2026-11-22T01:00:00Z): "
            "invalid_client: Client authentication failed",
        ),
        (
            dict(state="failing", error="http_503", consecutive_failures=1),
            "Token refresh failing (1 consecutive failure): http_503",
        ),
        (
            dict(
                state="failing",
                error="connect_error",
                consecutive_failures=2,
                since=datetime(2026, 11, 22, 2, 0, tzinfo=timezone(timedelta(hours=1))),
            ),
            "Token refresh failing (2 consecutive failures since 2026-11-22T01:00:00Z): "
            "connect_error",
        ),
        (
            dict(state="expired", error="invalid_grant", consecutive_failures=12, since=SINCE),
            "Token expired with no successful refresh (12 consecutive failures since "
            "2026-11-22T01:00:00Z); last error: invalid_grant",
        ),
        (
            dict(state="expired", error=None),
            "Token expired with no successful refresh (0 consecutive failures); "
            "last error: unknown error",
        ),
        (
            dict(state="recovered", error=None),
            "Token refresh recovered",
        ),
        (
            dict(
                state="recovered",
                error="invalid_client",
                description="Client authentication failed",
                consecutive_failures=5,
                since=SINCE,
            ),
            "Token refresh recovered after 5 consecutive failures (failing since "
            "2026-11-22T01:00:00Z); last error was invalid_client: Client authentication failed",
        ),
        (
            dict(state="failing", error="invalid_request", description=f"bad assertion {JWT}"),
            "Token refresh failing (0 consecutive failures): invalid_request: "
            "bad assertion [redacted]",
        ),
        (
            dict(state="failing", error="abcdefgh.ijklmnop.qrstuvwx"),
            "Token refresh failing (0 consecutive failures): [redacted]",
        ),
    ],
)
def test_notes(kwargs: dict[str, object], note: str) -> None:
    assert render_note(**kwargs) == note  # type: ignore[arg-type]


def test_no_note_carries_a_token_whatever_the_report() -> None:
    for state in ("failing", "recovered", "expired"):
        note = render_note(
            state=state,  # type: ignore[arg-type]
            error="invalid_grant",
            description=f"refresh_token={JWT[:20]} id {JWT} Bearer {JWT}",
            consecutive_failures=1,
        )
        assert JWT not in note
        assert JWT[:20] not in note
        assert "eyJ" not in note


def test_notes_fit_the_api_limit_in_bytes() -> None:
    note = render_note(state="failing", error="x", description="é" * 600)
    assert len(note.encode()) <= NOTE_LIMIT
    assert note.endswith("…")


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 11, 22, 1, 0, 0, 123456, tzinfo=UTC), "2026-11-22T01:00:00.123456Z"),
        (datetime(2026, 11, 22, 1, 0, 0, 0, tzinfo=UTC), "2026-11-22T01:00:00.000001Z"),
        (
            datetime(2026, 11, 22, 2, 0, 0, 5, tzinfo=timezone(timedelta(hours=1))),
            "2026-11-22T01:00:00.000005Z",
        ),
    ],
)
def test_micro_time(moment: datetime, text: str) -> None:
    assert micro_time(moment) == text


KEY = SeriesKey("billing", "api-1", "uid-1", "TokenRefreshFailed", "invalid_client")


def at(seconds: float) -> datetime:
    return SINCE + timedelta(seconds=seconds)


def test_event_body_is_a_core_v1_event_on_the_pod_with_kubectls_count() -> None:
    write = CreateEvent(
        key=KEY,
        type="Warning",
        note="Token refresh failing",
        event_time=SINCE,
        count=1,
        last_observed=SINCE,
    )
    assert event_body(write, name="api-1.1", instance="h" * 200) == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "api-1.1", "namespace": "billing"},
        "eventTime": "2026-11-22T01:00:00.000001Z",
        "reportingComponent": "token-refresher",
        "reportingInstance": "h" * 128,
        "source": {"component": "token-refresher"},
        "action": "Refresh",
        "reason": "TokenRefreshFailed",
        "type": "Warning",
        "message": "Token refresh failing",
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": "api-1",
            "namespace": "billing",
            "uid": "uid-1",
        },
        "firstTimestamp": "2026-11-22T01:00:00Z",
        "lastTimestamp": "2026-11-22T01:00:00Z",
        "count": 1,
    }
    again = event_body(
        CreateEvent(
            key=KEY, type="Warning", note="n", event_time=SINCE, count=3, last_observed=at(3.5)
        ),
        name="api-1.2",
        instance="op",
    )
    assert again["series"] == {"count": 3, "lastObservedTime": "2026-11-22T01:00:03.500000Z"}
    assert (again["count"], again["lastTimestamp"]) == (3, "2026-11-22T01:00:03Z")
    patch = PatchSeries(key=KEY, name="api-1.1", count=7, last_observed=at(3.5), note="7 failures")
    assert series_patch(patch) == {
        "message": "7 failures",
        "series": {"count": 7, "lastObservedTime": "2026-11-22T01:00:03.500000Z"},
        "count": 7,
        "lastTimestamp": "2026-11-22T01:00:03Z",
    }


def test_event_names_fit_253_characters() -> None:
    assert event_name("api-1", 255) == "api-1.ff"
    long = event_name("p" * 253, 1795310859123456789)
    assert len(long) == 253
    assert long.endswith(f".{1795310859123456789:x}")
