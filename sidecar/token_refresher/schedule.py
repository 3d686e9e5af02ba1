"""When to refresh and when to retry: pure functions over numbers, tested without I/O.

All instants here are on the monotonic clock (see `clock`). The refresher asks two
questions: "I just got a token that lives `lifetime` seconds — when do I refresh it?"
(`Pace.next_refresh`; `Pace.first_refresh` for the first token of the process) and "my n-th
attempt in a row failed — how long do I wait?" (`retry_delay`, `permanent_delay`).
Randomness is passed in as a function returning a float in [0, 1), so tests can pin it
and production spreads pods apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = [
    "EARLIEST_FIRST_FRACTION",
    "LATEST_FRACTION",
    "PERMANENT_FIRST_DELAY",
    "RETRY_AFTER_CAP",
    "Pace",
    "Random",
    "parse_retry_after",
    "permanent_delay",
    "retry_delay",
]

Random = Callable[[], float]

# Never plan the refresh later than this fraction of the lifetime, whatever
# REFRESH_RATIO + JITTER add up to (0.9 + 0.2 would otherwise land after expiry).
LATEST_FRACTION = 0.95

# The start-up window of `first_refresh` reaches no lower than this fraction of the
# lifetime (unless the normal window itself does): a token is not refreshed moments
# after it came.
EARLIEST_FIRST_FRACTION = 0.05

# The first retry after a permanent error: soon, because a fix made at the IdP (the
# client's registration, its grants) leaves no file change for `watch` to notice.
PERMANENT_FIRST_DELAY = 5.0

# A Retry-After is honoured, but one saying "next week" (or a date parsed wrongly) must
# not park the sidecar: beyond an hour we retry anyway.
RETRY_AFTER_CAP = 3600.0


@dataclass(frozen=True)
class Pace:
    """Where in a token's life to refresh it: REFRESH_RATIO, JITTER, MIN_REFRESH_INTERVAL.

    `next_refresh` and `first_refresh` are its two windows: every token's, and the wider
    one for the first token of a process.
    """

    ratio: float
    jitter: float
    min_interval: float

    def next_refresh(self, received: float, lifetime: float, random: Random) -> float:
        """The instant to refresh a token received at `received` that lives `lifetime` s.

        `received + ratio*lifetime ± jitter*lifetime` (uniform), clamped before expiry and
        no sooner than `min_interval` after `received`. The floor wins over expiry on
        purpose: a 1-second token refreshed every 5 s expires in between, but a token
        endpoint handing out 1-second tokens must not turn every pod into a tight loop.
        """
        offset = lifetime * self.ratio + lifetime * self.jitter * (2.0 * random() - 1.0)
        return self._clamped(received, offset, lifetime)

    def first_refresh(self, received: float, lifetime: float, random: Random) -> float:
        """The instant to refresh the first token a process received: `next_refresh` for a
        fleet that started together.

        The pods of a rollout, a node drain or a cluster restart start within seconds of each
        other, and `next_refresh` alone would keep them together: their first refreshes land
        within ±`jitter` of `ratio` * lifetime, and later cycles spread them only as a random
        walk (another ±jitter per cycle), so the IdP sees a peak several times the fleet's
        mean rate for many cycles (docs/benchmarks.md, "Fleet refresh spread"). Drawing the
        first refresh uniformly from the wider window
        [max(EARLIEST_FIRST_FRACTION, ratio - jitter - ratio/2), ratio + jitter] * lifetime
        spreads the fleet over about half a lifetime at once. The window always holds the
        normal one; it costs each process at most one earlier refresh, once; the same floor
        and ceiling as `next_refresh` apply.
        """
        high = self.ratio + self.jitter
        low = min(
            max(EARLIEST_FIRST_FRACTION, self.ratio - self.jitter - self.ratio / 2.0),
            self.ratio - self.jitter,
        )
        offset = lifetime * (low + (high - low) * random())
        return self._clamped(received, offset, lifetime)

    def _clamped(self, received: float, offset: float, lifetime: float) -> float:
        # Before expiry (LATEST_FRACTION), but never sooner than the floor: the floor wins.
        return received + max(min(offset, lifetime * LATEST_FRACTION), self.min_interval)


def retry_delay(
    failures: int,
    *,
    initial: float,
    maximum: float,
    random: Random,
    retry_after: float | None = None,
    until_expiry: float | None = None,
) -> float:
    """Seconds to wait after the `failures`-th transient failure in a row.

    Capped exponential backoff with full jitter (uniform in [0, cap), as in the AWS
    architecture blog's "Exponential Backoff And Jitter"), floored at half the initial
    delay so an unlucky run of small draws cannot hammer the IdP.

    While a still-valid token is held (`until_expiry` seconds left), a delay that would
    wake up after expiry is halved towards it instead: attempts get denser as expiry
    nears — a bounded number of them, thanks to the floor — rather than sleeping
    through the last chance. A server's Retry-After wins over both: it asked.
    """
    floor = initial / 2.0
    # 2.0 ** 1024 raises OverflowError: after ~17 h of a dead IdP at BACKOFF_MAX 60 s the
    # loop would crash. The cap is reached long before 2 ** 1000 (or is inf, fine for min).
    cap = min(maximum, initial * 2.0 ** min(max(0, failures - 1), 1000))
    delay = max(floor, cap * random())
    if until_expiry is not None and until_expiry > 0 and delay >= until_expiry:
        delay = max(floor, until_expiry / 2.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
    return delay


def permanent_delay(
    failures: int,
    *,
    ceiling: float,
    random: Random,
    first: float = PERMANENT_FIRST_DELAY,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait after the `failures`-th permanent error in a row (invalid_client,
    a dead refresh token).

    Retried at all because a person may fix the registration or the secret without
    restarting the pod: soon at first, since the person may be fixing it right now,
    then doubling from `first` up to `ceiling` (PERMANENT_ERROR_INTERVAL), which is never
    exceeded. Up to 10 % less, so a fleet sharing one broken client does not retry in
    step. A changed credential file is retried at once (`watch`), whatever this says.
    """
    step = min(ceiling, first * 2.0 ** min(max(0, failures - 1), 1000))
    delay = step * (0.9 + 0.1 * random())
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
    return delay


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (RFC 9110 section 10.2.3), or None.

    Either delay-seconds or an HTTP-date; `now` is the wall clock, since a date is
    wall-clock by nature. A date in the past means "now" (0).
    """
    if value is None:
        return None
    value = value.strip()
    # ASCII only: str.isdigit() also accepts "²", which float() refuses, and a header
    # arrives as latin-1, so any byte 0xB2 from a gateway would crash the loop.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; be lenient with sloppy servers
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
