"""SIGKILL at random points across 500 write cycles: the app never sees a partial or
empty token file, every restart carries on, and nothing piles up on the volume.

The sidecar runs against the real oidc-provider with 2-second tokens refreshed every
~20 ms, so it writes its file dozens of times a second. It is killed with SIGKILL —
no handler, no cleanup — at three kinds of moments: a random instant after it has
written, the very instant it creates its temporary file (an inotify watch on the
directory fires the kill, which lands mid-write), and a random instant while it is
still starting (adopting the previous run's file). After each kill it is started again.
Meanwhile an app stand-in reads the file continuously.
"""

from __future__ import annotations

import ctypes
import os
import random
import select
import struct
import time
from pathlib import Path

import pytest

from tests.faults.harness import TokenReader, wait_until

pytestmark = [pytest.mark.idp, pytest.mark.slow]

WRITES = 500
# Seconds the kill loop may take: it ends at WRITES writes, about 75 s on an idle machine;
# the budget only bounds a machine too loaded to get there (then the count fails, clearly).
BUDGET = 300.0

IN_CREATE = 0x00000100
_EVENT = struct.Struct("iIII")


class CreateWatch:
    """inotify on one directory: `wait(prefix, timeout)` returns when a file whose name
    starts with `prefix` is created there (Linux only; ctypes, no extra package)."""

    def __init__(self, directory: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if self._libc.inotify_add_watch(self.fd, os.fsencode(directory), IN_CREATE) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")

    def drain(self) -> None:
        while select.select([self.fd], [], [], 0)[0]:
            os.read(self.fd, 65536)

    def wait(self, prefix: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.fd], [], [], left)[0]:
                return False
            data = os.read(self.fd, 65536)
            offset = 0
            while offset < len(data):
                _wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size
                name = data[offset : offset + length].rstrip(b"\0").decode()
                offset += length
                if name.startswith(prefix):
                    return True
        return False

    def close(self) -> None:
        os.close(self.fd)


def writes_in(sidecar, run: int) -> int:
    return sum(1 for line in sidecar.logs(run) if line.get("msg", "").startswith("token refreshed"))


def temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


@pytest.mark.timeout(BUDGET + 120)
def test_sigkill_at_random_points_never_leaves_a_partial_file_or_a_pile_of_temporaries(
    idps, sidecars
) -> None:
    idp = idps(2)
    sidecar = sidecars.for_idp(
        idp,
        refresh_ratio=0.01,  # every 20 ms + the round trip
        jitter=0,
        min_refresh_interval=0,
        backoff_initial=0.05,
        backoff_max=0.2,
        start=False,
    )
    directory = sidecar.output.parent
    rng = random.Random(os.environ.get("FAULTS_SEED", "kill"))
    watch = CreateWatch(directory)
    kinds = {"after a write": 0, "mid-write": 0, "while starting": 0}
    left_behind = 0  # kills that left a new temporary file: they landed mid-write
    writes = 0
    began = time.monotonic()
    try:
        with TokenReader(sidecar.output, strict_expiry=False) as app:
            while writes < WRITES and time.monotonic() - began < BUDGET:
                run = sidecar.runs + 1
                before = set(temporaries(directory))
                kind = rng.choice(["after a write", "after a write", "mid-write", "while starting"])
                if kind == "while starting":
                    sidecar.start(wait=False)
                    time.sleep(rng.uniform(0.0, 0.5))
                else:
                    sidecar.start()
                    wait_until(
                        f"run {run} to write a token",
                        lambda run=run: writes_in(sidecar, run),
                        timeout=10,
                    )
                    if kind == "mid-write":
                        watch.drain()
                        if not watch.wait(f".{sidecar.output.name}.tmp-", timeout=2):
                            kind = "after a write"  # (it was between writes for 2 s)
                    else:
                        time.sleep(rng.uniform(0.0, 0.3))
                sidecar.kill()
                kinds[kind] += 1
                left_behind += bool(set(temporaries(directory)) - before)
                writes += writes_in(sidecar, run)
                if sidecar.runs > 1:
                    _carried_on(sidecar, run)

            # One last, gentle run: it must clean up after all those kills.
            sidecar.start()
            wait_until("a token after the last restart", lambda: writes_in(sidecar, sidecar.runs))
            assert sidecar.stop() == 0
    finally:
        watch.close()
    print(f"\n{sidecar.runs - 1} kills {kinds}, {writes} writes, {left_behind} left a temp file")
    assert writes >= WRITES, f"only {writes} writes in {BUDGET:.0f} s ({sidecar.runs} runs)"
    assert app.violations == [], app.violations
    assert app.reads > 100  # the app really read throughout (a thread, slowed by load)
    assert kinds["mid-write"] >= 5, kinds
    assert kinds["while starting"] >= 5, kinds
    assert temporaries(directory) == [], "temporary files left on the volume"


def _carried_on(sidecar, run: int) -> None:
    """A run that got as far as looking at the previous run's file adopted or replaced it."""
    messages = [line.get("msg", "") for line in sidecar.logs(run)]
    if not any(m.startswith("token-refresher started") for m in messages):
        return  # killed before it got that far
    looked = any(
        m.startswith(("kept the token left by a previous run", "removed the stale token file"))
        for m in messages
    )
    wrote = any(m.startswith("token refreshed") for m in messages)
    # Killed in the middle of the look: nothing yet but the start line and the temporary
    # files removed as the look begins (logged before the verdict on the token file).
    mid_look = all(
        m.startswith("token-refresher started") or "temporary files left by" in m for m in messages
    )
    assert looked or wrote or mid_look, messages


def test_sigterm_mid_refresh_leaves_a_whole_file_and_exit_0(idps, sidecars) -> None:
    idp = idps(2)
    sidecar = sidecars.for_idp(
        idp,
        refresh_ratio=0.01,
        jitter=0,
        min_refresh_interval=0,
    )
    for _ in range(5):
        wait_until("a token", lambda: sidecar.output.exists())
        time.sleep(random.uniform(0, 0.2))
        assert sidecar.stop() == 0
        assert temporaries(sidecar.output.parent) == []
        assert sidecar.output.read_bytes().startswith(b"{")
        summary = sidecar.logs(sidecar.runs)[-1]["msg"]
        assert summary.startswith("stopped after"), summary
        sidecar.start()
