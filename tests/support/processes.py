"""Child processes of tests and tools: started in a session of their own with their
output in a log file, and stopped the way the kubelet stops a container: SIGTERM to the
whole process group, SIGKILL after a grace period."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["python_output", "start_process", "stop_process"]


def start_process(
    argv: Sequence[str],
    log_file: Path,
    *,
    env: Mapping[str, str] | None = None,
    append: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session (so stop_process reaches everything it spawns), with
    stdout and stderr in `log_file` (appended to with `append`) and no stdin."""
    with log_file.open("ab" if append else "wb") as log:
        return subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[Any], *, grace: float = 5.0) -> None:
    """Stop a process started with start_new_session=True, and everything it spawned."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)


def python_output(code: str, *, timeout: float = 60) -> str:
    """The standard output of `code` run by a fresh interpreter of this venv: what a
    module imports is only seen in a process that has imported nothing else."""
    import sys

    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=True
    ).stdout
