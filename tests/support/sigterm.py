"""A pytest plugin: SIGTERM stops the run as Ctrl-C does, so teardown still happens.

A CI job that times out, or a person's `kill`, sends SIGTERM; by default that ends the
interpreter at once, and the session's fixtures never tear down: the real node's
processes, mounts, bridge and iptables rules would stay on the machine. As a
KeyboardInterrupt it ends the test under way, and pytest then runs every finalizer.
Installed again before each test, because code under test may take the signal over and
give it back to the default (asyncio's remove_signal_handler does).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import pytest

__all__ = ["install"]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def install() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def pytest_sessionstart(session: pytest.Session) -> None:
    install()


def pytest_runtest_setup(item: pytest.Item) -> None:
    install()
