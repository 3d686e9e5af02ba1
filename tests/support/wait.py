"""The one bounded wait: poll a check until it returns something truthy.

Tests, harnesses, the demo and the benchmarks all wait for something a process does on
its own time (a file written, a port open, an Event recorded), so they all poll; one
helper keeps the timeout message, the progress notes and the pace in one place.
`wait_until` sleeps between checks; `wait_until_async` awaits, for a test whose event
loop must keep running what it waits for. Both share `_Polls`, the deadline and notes.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["WaitTimeout", "wait_until", "wait_until_async"]

T = TypeVar("T")


class WaitTimeout(AssertionError, TimeoutError):
    """A wait ran out. An AssertionError, so pytest reports it as the test's failure; a
    TimeoutError, so scripts (the demo, the benchmarks) can catch it as one."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Polls:
    """The pauses of one wait: `every` seconds each, until `timeout` has passed."""

    def __init__(
        self,
        what: str,
        timeout: float,
        every: float,
        note: Callable[[str], None] | None,
        note_every: float,
    ) -> None:
        self.what, self.timeout, self.every = what, timeout, every
        self.note, self.note_every = note, note_every
        self.deadline = time.monotonic() + timeout
        self.next_note = time.monotonic() + note_every

    def pause(self) -> float:
        """How long to sleep after a check that failed; WaitTimeout once time is up."""
        now = time.monotonic()
        if now > self.deadline:
            raise WaitTimeout(f"timed out after {self.timeout:g} s waiting for {self.what}")
        if self.note is not None and now > self.next_note:
            self.note(f"waiting for {self.what}: {self.deadline - now:.0f} s left")
            self.next_note = now + self.note_every
        return self.every


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
    polls = _Polls(what, timeout, every, note, note_every)
    while True:
        result = check()
        if result:
            return result
        time.sleep(polls.pause())


async def wait_until_async(
    what: str,
    check: Callable[[], T | None] | Callable[[], Awaitable[T | None]],
    # The same bound as wait_until's, not asyncio.timeout(): the failure names `what`.
    timeout: float = 10.0,  # noqa: ASYNC109
    *,
    every: float = 0.5,
    note: Callable[[str], None] | None = _stderr,
    note_every: float = 10.0,
) -> T:
    """`wait_until` for a coroutine: awaits between checks, so the tasks it waits on run.

    `check` may be a coroutine function (a request to a server under test): it is awaited.
    """
    polls = _Polls(what, timeout, every, note, note_every)
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(polls.pause())
