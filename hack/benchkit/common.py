"""What every benchmark section needs: the plan, progress lines, bounded waits (tests.support's),
/proc readings and the child processes of the run (all stopped on the way out)."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import stop_process, wait_until

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's console scripts
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Plan:
    """How much of everything to do: the full run, or --quick's tiny counts."""

    refreshes: int = 200
    idle_seconds: float = 60.0
    ttft_runs: int = 5
    token_rounds: int = 3
    profile: bool = True
    pods: int = 200
    pod_threads: int = 4
    pod_rounds: int = 4
    mutate_calls: int = 200
    fleet_pods: int = 1000
    fleet_minutes: int = 20
    fleet_seeds: int = 5
    report_pods: int = 50
    reports: int = 3000
    report_threads: int = 4
    family_replicas: int = 3
    family_rotations: int = 30


QUICK = Plan(
    refreshes=10,
    idle_seconds=3.0,
    ttft_runs=1,
    token_rounds=1,
    profile=False,
    pods=10,
    pod_threads=2,
    pod_rounds=1,
    mutate_calls=10,
    fleet_seeds=1,
    report_pods=4,
    reports=40,
    report_threads=2,
    family_replicas=2,
    family_rotations=3,
)

SECTIONS = ("sidecar", "container", "webhook", "fleet", "reports", "family")

# The pace of a busy sidecar, as a process and in a container alike: REFRESH_RATIO=0.1 of
# a 5 s token is one refresh every 0.5 s; JITTER=0 keeps the pace even;
# MIN_REFRESH_INTERVAL=0.3 lets that pace through the 1 s default floor.
TOKEN_LIFETIME = 5
PACE = {"refresh_ratio": "0.1", "jitter": "0", "min_refresh_interval": "0.3"}
PACE_TEXT = "REFRESH_RATIO=0.1 JITTER=0 MIN_REFRESH_INTERVAL=0.3 (a refresh every 0.5 s)"


class Progress:
    """Progress lines on stderr: elapsed time, the section, what it does, what is left."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, section: str, text: str) -> None:
        elapsed = int(time.monotonic() - self.started)
        print(f"[bench {elapsed // 60:d}:{elapsed % 60:02d}] {section}: {text}", file=sys.stderr)
        sys.stderr.flush()


# tests.support's one wait, at the bench's pace: its checks are files and local ports, and
# in some sections when a wait ends is part of the figure. Silent: Progress says the rest.
wait_for = functools.partial(wait_until, every=0.05, note=None)


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def proc_status(pid: int) -> dict[str, int]:
    """The numeric fields of /proc/<pid>/status (memory in KiB)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0])
    return fields


@dataclass(frozen=True)
class CpuSample:
    at: float  # monotonic
    ticks: int  # utime + stime of the process, in clock ticks
    runtime_ns: int  # time on CPU of all its threads (schedstat), nanoseconds
    switches: int  # voluntary + involuntary context switches of all its threads: wake-ups


def cpu_sample(pid: int) -> CpuSample:
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat.rsplit(")", 1)[1].split()
    ticks = int(rest[11]) + int(rest[12])  # fields 14 (utime) and 15 (stime)
    runtime = switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            runtime += int((task / "schedstat").read_text().split()[0])
            status = proc_status(int(task.name))
            switches += status["voluntary_ctxt_switches"] + status["nonvoluntary_ctxt_switches"]
    return CpuSample(time.monotonic(), ticks, runtime, switches)


def cpu_seconds(pid: int) -> float:
    """CPU time of a whole process, threads that have exited included (clock ticks,
    10 ms apart; our own process to the nanosecond)."""
    if pid == os.getpid():
        return time.process_time()
    return cpu_sample(pid).ticks / CLK_TCK


# How the sidecar image runs Python (Dockerfile, stage sidecar-runtime): -OO and no
# column tables, every module precompiled so. The bench's sidecars, and the bare request
# they are compared with, run so too. Their bytecode goes to a cache of its own in the
# venv (the .opt-2.pyc files of this configuration), written by whichever process first
# imports a module: `warm_bytecode` runs that process before anything is measured, as
# the image compiles at build time, so no measured process compiles from source.
IMAGE_PYTHON_ENV = {"PYTHONOPTIMIZE": "2", "PYTHONNODEBUGRANGES": "1"}
BYTECODE_CACHE = Path(sys.prefix) / "pycache-sidecar"


def sidecar_env(**settings: str) -> dict[str, str]:
    """The environment of a sidecar: ours without TOKEN_REFRESHER_* (the test suite's
    run marker excepted, so its leak guard sees our children), the image's Python
    settings (`IMAGE_PYTHON_ENV`), plus `settings`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TOKEN_REFRESHER_") or k == "TOKEN_REFRESHER_TEST_RUN"
    }
    env.pop("KUBECONFIG", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the cache is written once, then only read
    env.update(IMAGE_PYTHON_ENV, PYTHONPYCACHEPREFIX=str(BYTECODE_CACHE))
    env.update({f"TOKEN_REFRESHER_{k.upper()}": v for k, v in settings.items()})
    return env


def warm_bytecode(argv: list[str], done: Path, env: dict[str, str], procs: Processes) -> None:
    """Run `argv` (a sidecar writing `done`) once, so that every module it imports up to
    its first token is in `BYTECODE_CACHE` before a measured process starts."""
    proc = procs.start(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for("the warm-up sidecar's token", done.exists, timeout=60)
    procs.stop(proc)


class Processes:
    """Every child process of the run, stopped (with its process group) on close."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []

    def start(self, argv: list[str], **popen: Any) -> subprocess.Popen[Any]:
        popen.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, start_new_session=True, **popen)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any]) -> int:
        stop_process(proc)
        if proc in self._procs:
            self._procs.remove(proc)
        return proc.returncode

    def close(self) -> None:
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                stop_process(proc)
        self._procs.clear()
