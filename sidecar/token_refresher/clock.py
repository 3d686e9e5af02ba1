"""The clock the refresher reads and sleeps on, passed in so tests can own time.

Two clocks, on purpose: scheduling runs on the monotonic clock, so an NTP step or a
suspended VM moving the wall clock neither makes every pod refresh at once nor leaves a
stale token in place; the wall clock is only used to *show* times (the JSON file's
`expires_at`, `/status`, metrics) and to read a JWT's `exp`, which is wall-clock by nature.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; only differences mean anything."""
        ...

    def time(self) -> float:
        """Seconds since the Unix epoch (wall clock, may jump)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of monotonic time."""
        ...


class SystemClock:
    """The real clocks of this process."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
