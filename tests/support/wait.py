"""The one bounded wait: poll a check until it returns something truthy.

Tests, harnesses, the demo and the benchmarks all wait for something a process does on
its own time (a file written, a port open, an Event recorded), so they all poll; one
helper keeps the timeout message, the progress notes and the pace in one place.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["WaitTimeout", "wait_until"]

T = TypeVar("T")


class WaitTimeout(AssertionError, TimeoutError):
    """A wait ran out. An AssertionError, so pytest reports it as the test's failure; a
    TimeoutError, so scripts (the demo, the benchmarks) can catch it as one."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def wait_until(
    what: str,
    check: Callable[[], T | None],
    timeout: float = 10.0,
    *,
    every: float = 0.5,
    note: Callable[[str], None] | None = _stderr,
    note_every: float = 10.0,
) -> T:
    """Poll `check` every `every` seconds until it returns something truthy, and return
    that; raise WaitTimeout naming `what` after `timeout` seconds.

    The default pace suits checks that cost a process or an API call (kubectl, the
    apiserver); cheap checks that must catch a short-lived state poll faster. Every
    `note_every` seconds, `note` (None: silence) is told what is awaited and how long is
    left, so a slow run on a busy machine says what it is doing.
    """
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + note_every
    while True:
        result = check()
        if result:
            return result
        now = time.monotonic()
        if now > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}")
        if note is not None and now > next_note:
            note(f"waiting for {what}: {deadline - now:.0f} s left")
            next_note = now + note_every
        time.sleep(every)
