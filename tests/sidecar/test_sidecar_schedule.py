"""Refresh and retry timing: pure functions, no I/O, no real clock."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.fakes import drive
from token_refresher import Refresher
from token_refresher.schedule import (
    EARLIEST_FIRST_FRACTION,
    LATEST_FRACTION,
    RETRY_AFTER_CAP,
    Pace,
    parse_retry_after,
    permanent_delay,
    retry_delay,
)


def fixed(value: float):
    return lambda: value


def test_refresh_at_ratio_of_lifetime_without_jitter() -> None:
    at = Pace(ratio=0.7, jitter=0.1, min_interval=5).next_refresh(100.0, 3600, fixed(0.5))
    assert at == pytest.approx(100.0 + 2520)


def test_jitter_spans_plus_minus_fraction_of_lifetime() -> None:
    low = Pace(ratio=0.5, jitter=0.1, min_interval=0).next_refresh(0.0, 1000, fixed(0.0))
    high = Pace(ratio=0.5, jitter=0.1, min_interval=0).next_refresh(0.0, 1000, fixed(0.999999))
    assert low == pytest.approx(400)
    assert high == pytest.approx(600, abs=0.01)


@given(
    lifetime=st.floats(min_value=0.001, max_value=400 * 86400),
    ratio=st.floats(min_value=0.01, max_value=0.99),
    jitter=st.floats(min_value=0.0, max_value=0.49),
    min_interval=st.floats(min_value=0.0, max_value=60),
    draw=st.floats(min_value=0.0, max_value=0.999999),
)
def test_refresh_is_before_expiry_unless_the_floor_forbids(
    lifetime: float, ratio: float, jitter: float, min_interval: float, draw: float
) -> None:
    at = Pace(ratio=ratio, jitter=jitter, min_interval=min_interval).next_refresh(
        0.0, lifetime, fixed(draw)
    )
    assert at >= min_interval
    assert at <= max(lifetime * LATEST_FRACTION, min_interval)
    if min_interval < lifetime * LATEST_FRACTION:
        assert at < lifetime


def test_ratio_plus_jitter_beyond_one_still_refreshes_before_expiry() -> None:
    at = Pace(ratio=0.9, jitter=0.4, min_interval=0).next_refresh(0.0, 100, fixed(0.99))
    assert at == pytest.approx(95)


def test_one_second_token_is_refreshed_no_sooner_than_the_floor() -> None:
    at = Pace(ratio=0.7, jitter=0.1, min_interval=5).next_refresh(50.0, 1, fixed(0.5))
    assert at == 55.0


def test_first_refresh_is_drawn_from_the_wider_start_up_window() -> None:
    # ratio 0.7, jitter 0.1: [0.7 - 0.1 - 0.35, 0.7 + 0.1] = [0.25, 0.8] of the lifetime.
    def at(draw: float) -> float:
        return Pace(ratio=0.7, jitter=0.1, min_interval=1).first_refresh(100.0, 1000, fixed(draw))

    assert at(0.0) == pytest.approx(100 + 250)
    assert at(0.5) == pytest.approx(100 + 525)
    assert at(0.999999) == pytest.approx(100 + 800, abs=0.01)


def test_first_refresh_window_never_starts_before_the_earliest_fraction() -> None:
    # ratio 0.2, jitter 0.1: 0.2 - 0.1 - 0.1 = 0 would refresh right after receipt.
    low = Pace(ratio=0.2, jitter=0.1, min_interval=0).first_refresh(0.0, 1000, fixed(0.0))
    assert low == pytest.approx(1000 * EARLIEST_FIRST_FRACTION)


def test_first_refresh_window_holds_the_normal_one() -> None:
    # ratio 0.06, jitter 0.05: the normal window opens at 0.01, below the earliest fraction.
    low = Pace(ratio=0.06, jitter=0.05, min_interval=0).first_refresh(0.0, 1000, fixed(0.0))
    assert low == pytest.approx(10)


def test_first_refresh_keeps_the_floor_and_the_ceiling() -> None:
    one_second = Pace(ratio=0.7, jitter=0.1, min_interval=5).first_refresh(50.0, 1, fixed(0.5))
    assert one_second == 55.0
    late = Pace(ratio=0.9, jitter=0.4, min_interval=0).first_refresh(0.0, 100, fixed(0.99))
    assert late == pytest.approx(100 * LATEST_FRACTION)


@given(
    lifetime=st.floats(min_value=0.001, max_value=400 * 86400),
    ratio=st.floats(min_value=0.01, max_value=0.99),
    jitter=st.floats(min_value=0.0, max_value=0.49),
    min_interval=st.floats(min_value=0.0, max_value=60),
    draw=st.floats(min_value=0.0, max_value=0.999999),
)
def test_first_refresh_is_within_its_window_and_before_expiry(
    lifetime: float, ratio: float, jitter: float, min_interval: float, draw: float
) -> None:
    at = Pace(ratio=ratio, jitter=jitter, min_interval=min_interval).first_refresh(
        0.0, lifetime, fixed(draw)
    )
    # The window holds the normal one, [ratio - jitter, ratio + jitter].
    low = min(max(EARLIEST_FIRST_FRACTION, ratio / 2 - jitter), ratio - jitter) * lifetime
    high = min(ratio + jitter, LATEST_FRACTION) * lifetime
    assert at >= min_interval
    assert at <= max(high, min_interval) * (1 + 1e-9)
    assert at >= min(low, high) * (1 - 1e-9)


async def test_only_the_first_token_of_the_process_uses_the_start_up_window(
    make_settings, idp, clock
) -> None:
    # Draws at 0: the start-up window opens at 0.25 x 3600 = 900 s, the normal one at
    # (0.7 - 0.1) x 3600 = 2160 s, for the second token and every later one.
    async with Refresher(
        make_settings(), transport=idp.transport, clock=clock, random=fixed(0.0)
    ) as r:
        await drive(r, lambda: len(idp.posts) == 4)
    gaps = [round(b.at - a.at, 6) for a, b in itertools.pairwise(idp.posts)]
    assert gaps == [900.0, 2160.0, 2160.0]


def test_backoff_grows_exponentially_and_is_capped() -> None:
    caps = [retry_delay(n, initial=1, maximum=60, random=fixed(0.999999)) for n in range(1, 10)]
    assert caps == pytest.approx([1, 2, 4, 8, 16, 32, 60, 60, 60], abs=1e-4)


def test_backoff_is_full_jitter_with_a_floor() -> None:
    assert retry_delay(5, initial=1, maximum=60, random=fixed(0.25)) == pytest.approx(4)
    # A draw near zero would hammer the IdP; the floor is half the initial delay.
    assert retry_delay(5, initial=1, maximum=60, random=fixed(0.0)) == 0.5


def test_retry_after_is_honoured_over_backoff() -> None:
    assert retry_delay(1, initial=1, maximum=60, random=fixed(0.5), retry_after=30) == 30


def test_absurd_retry_after_is_capped() -> None:
    delay = retry_delay(1, initial=1, maximum=60, random=fixed(0.5), retry_after=10**9)
    assert delay == RETRY_AFTER_CAP


def test_retry_that_would_sleep_past_expiry_moves_before_it() -> None:
    delay = retry_delay(9, initial=1, maximum=60, random=fixed(0.999), until_expiry=20)
    assert delay == 10  # halfway to expiry: another chance before the token dies


def test_retries_near_expiry_never_drop_below_the_floor() -> None:
    delay = retry_delay(9, initial=2, maximum=60, random=fixed(0.999), until_expiry=0.3)
    assert delay == 1.0


def test_permanent_errors_retry_from_a_few_seconds_doubling_to_the_ceiling() -> None:
    steps = [permanent_delay(n, ceiling=300, random=fixed(0.999999)) for n in range(1, 10)]
    assert steps == pytest.approx([5, 10, 20, 40, 80, 160, 300, 300, 300], abs=0.01)


def test_permanent_retries_spread_ten_percent_below_and_never_above_the_ceiling() -> None:
    assert permanent_delay(1, ceiling=300, random=fixed(0.0)) == pytest.approx(4.5)
    assert permanent_delay(9, ceiling=300, random=fixed(0.0)) == pytest.approx(270)
    assert permanent_delay(1, ceiling=3, random=fixed(0.999999)) == pytest.approx(3, abs=0.01)
    assert permanent_delay(10**6, ceiling=300, random=fixed(0.5)) == pytest.approx(285)


def test_a_permanent_error_honours_retry_after() -> None:
    assert permanent_delay(1, ceiling=300, random=fixed(0.5), retry_after=900) == 900


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),  # now is 07:28:00
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # in the past: now
        ("soon", None),
        ("-5", None),
        (None, None),
    ],
)
def test_retry_after_header_forms(header: str | None, expected: float | None) -> None:
    now = 1445412480.0  # 2015-10-21T07:28:00Z
    assert parse_retry_after(header, now) == expected
