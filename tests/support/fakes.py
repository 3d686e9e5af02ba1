"""Fakes for the sidecar's tests: a clock we own, a scripted identity provider, and
a Secret volume written the way the kubelet writes it.

Kept apart from conftest.py (which only holds fixtures), in tests.support with the
other shared helpers. The fakes only inject faults and time; the happy path against
real IdPs lives in the integration tests.
"""

from __future__ import annotations

import asyncio
import heapq
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx2

TOKEN_URL = "https://idp.example/token"
CLIENT_SECRET = "SECRET-CANARY-client-secret"


class FakeClock:
    """Monotonic and wall clocks that move only when told to (or when slept on)."""

    def __init__(self, mono: float = 1000.0, wall: float = 1_800_000_000.0) -> None:
        self.mono = mono
        self.wall = wall
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class SteppedClock(FakeClock):
    """A fake clock for several loops at once: `sleep` waits until the test moves time
    to its deadline, so no loop's sleep moves time under another (FakeClock's would).

    `step(sleepers)` lets the loops run until `sleepers` of them are asleep (nothing else
    can happen then), and moves time to the earliest deadline: simulated time, in order.
    """

    def __init__(self, mono: float = 1000.0, wall: float = 1_800_000_000.0) -> None:
        super().__init__(mono, wall)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = 0

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._count += 1
        heapq.heappush(self._sleepers, (self.mono + max(0.0, seconds), self._count, waiter))
        await waiter

    def _live(self) -> list[float]:
        return [deadline for deadline, _, waiter in self._sleepers if not waiter.done()]

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        while self._sleepers and self._sleepers[0][0] <= self.mono:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)

    async def settle(self, sleepers: int, *, limit: int = 20000) -> None:
        """Run the loop until `sleepers` sleeps are pending."""
        for _ in range(limit):
            if len(self._live()) >= sleepers:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"only {len(self._live())} of {sleepers} loops went to sleep")

    async def step(self, sleepers: int, *, until: float | None = None) -> None:
        """Settle, then move time to the earliest deadline (at most to `until`)."""
        await self.settle(sleepers)
        target = min(self._live())
        if until is not None:
            target = min(target, until)
        self.advance(max(0.0, target - self.mono))

    async def run_until(self, mono: float, sleepers: int) -> None:
        """Step until monotonic time `mono`, then settle there."""
        while self.mono < mono:
            await self.step(sleepers, until=mono)
        await self.settle(sleepers)


@dataclass
class Seen:
    """One request the fake IdP received."""

    method: str
    url: str
    headers: httpx2.Headers
    form: dict[str, str]
    at: float  # monotonic time of the fake clock
    body: bytes = b""


Reply = httpx2.Response | Exception | Callable[[httpx2.Request], httpx2.Response]


@dataclass
class FakeIdP:
    """A token endpoint that answers from a script, then with fresh tokens."""

    clock: FakeClock
    script: deque[Reply] = field(default_factory=deque)
    seen: list[Seen] = field(default_factory=list)
    issued: int = 0
    expires_in: float = 3600

    def reply(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def token(self, **fields: Any) -> httpx2.Response:
        self.issued += 1
        body: dict[str, Any] = {
            "access_token": f"SECRET-CANARY-access-{self.issued}",
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        body.update(fields)
        return httpx2.Response(200, json={k: v for k, v in body.items() if v is not None})

    @staticmethod
    def error(
        status: int, error: str, description: str | None = None, **headers: str
    ) -> httpx2.Response:
        body = {"error": error}
        if description:
            body["error_description"] = description
        return httpx2.Response(status, json=body, headers=headers)

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        form = dict(parse_qsl(request.content.decode())) if request.content else {}
        self.seen.append(
            Seen(
                request.method,
                str(request.url),
                request.headers,
                form,
                self.clock.mono,
                request.content,
            )
        )
        reply = self.script.popleft() if self.script else self.token()
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx2.Response):
            return reply
        return reply(request)

    @property
    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self.handler)

    @property
    def posts(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]


async def spin_until(condition: Callable[[], bool], *, limit: int = 20000) -> None:
    """Yield to the event loop until `condition()` holds, at most `limit` times.

    For code on the fake clock: no real time passes, so the bound is a number of loop
    turns, and a condition that never holds fails at once rather than after a timeout.
    """
    for _ in range(limit):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def drive(refresher: Any, until: Callable[[], bool], *, limit: int = 20000) -> None:
    """Run the refresher's loop on the fake clock until `until()` holds, then stop it."""
    task = asyncio.create_task(refresher.run())
    try:
        await spin_until(lambda: until() or task.done(), limit=limit)
    finally:
        refresher.stop()
        await task


def rotate(path: Path, content: str | None) -> None:
    """Replace a credential file's content (None: delete it), as kubelet or a person would.

    The mtime moves a second forward, so change detection cannot miss it on filesystems
    with coarse timestamps.
    """
    if content is None:
        path.unlink()
        return
    path.write_text(content)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


class SecretVolume:
    """A directory laid out as the kubelet lays out a Secret volume, updated as it does.

    `<key>` -> `..data/<key>`, `..data` -> `..<generation>/`; `update()` writes a new
    generation directory and swaps `..data` to it with one rename (kubelet's
    AtomicWriter), so every key resolves to a new file at once, changed or not.
    """

    def __init__(self, root: Path, **files: str) -> None:
        self.root = root
        self.generation = 0
        root.mkdir(parents=True)
        self.update(**files)
        for key in files:
            (root / key).symlink_to(Path("..data") / key)

    def path(self, key: str) -> Path:
        return self.root / key

    def update(self, **files: str) -> None:
        """The whole Secret's new content: every key, as the kubelet writes it."""
        self.generation += 1
        directory = self.root / f"..{self.generation}"
        directory.mkdir()
        for key, content in files.items():
            (directory / key).write_text(content)
        link = self.root / "..data_tmp"
        link.symlink_to(directory.name)
        os.replace(link, self.root / "..data")
