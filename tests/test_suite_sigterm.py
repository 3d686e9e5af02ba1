"""A SIGTERM to pytest (a CI timeout, a person's kill) still tears the session down
(`tests/support/sigterm.py`): what a session fixture set up on the machine is removed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.controlplane import REPO
from tests.support import wait_until

VICTIM = """
import os, pathlib, time, pytest

@pytest.fixture(scope="session")
def machine():
    yield  # the real node's session fixture, in miniature
    pathlib.Path(os.environ["TORN_DOWN"]).write_text("torn down")

def test_a_long_one(machine):
    pathlib.Path(os.environ["RUNNING"]).write_text("running")
    time.sleep(120)
"""


def test_sigterm_ends_the_run_with_its_session_torn_down(tmp_path: Path) -> None:
    (tmp_path / "test_victim.py").write_text(VICTIM)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    running, torn_down = tmp_path / "running", tmp_path / "torn-down"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RUNNING": str(running),
        "TORN_DOWN": str(torn_down),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.support.sigterm",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "test_victim.py"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until("the victim's test running", running.exists, 60, every=0.1, note=None)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert torn_down.read_text() == "torn down", out
    assert process.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "KeyboardInterrupt: signal SIGTERM" in out
