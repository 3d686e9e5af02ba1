"""Session fixtures shared by every test: the real control plane, the built tools, and a
guard that no process the suite started outlives it.

Every process started during the run inherits TOKEN_REFRESHER_TEST_RUN (set at session
start); after the session, any process still carrying it is a leak: it is killed, named,
and the run fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.controlplane import REPO, ControlPlane, Tools
from tests.controlplane import tools as locate_tools
from tests.support.secrets import secrets_in

if TYPE_CHECKING:
    from tests.node import Node

pytest_plugins = ["tests.idp", "tests.support.sigterm"]

_MARK = "TOKEN_REFRESHER_TEST_RUN"


def pytest_sessionstart(session: pytest.Session) -> None:
    os.environ[_MARK] = uuid.uuid4().hex


def real_components() -> str:
    """The real components the suite runs, with their versions, for the first line."""
    versions = {}
    for line in subprocess.run(
        [str(REPO / "hack" / "tools.sh"), "--print"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines():
        name, _, path = line.partition("=")
        # The cache folder is <name>-<version>; Dex's version is a pseudo-version.
        versions[name.lower().replace("_", "-")] = Path(path).parent.name.rpartition(
            name.lower().replace("_", "-") + "-"
        )[2]
    runc = subprocess.run(["runc", "--version"], capture_output=True, text=True, check=False)
    package = REPO / "hack" / "idp" / "node_modules" / "oidc-provider" / "package.json"
    oidc = json.loads(package.read_text())["version"] if package.exists() else "?"
    parts = [
        f"kube-apiserver/kubelet/kube-proxy/scheduler/controller-manager "
        f"{versions.get('kubelet', '?')}",
        f"etcd {versions.get('etcd', '?')}",
        f"containerd {versions.get('containerd', '?')}",
        f"runc {(runc.stdout.split() or ['', '', '?'])[2]}",
        f"CoreDNS {versions.get('coredns', '?')}",
        f"helm {versions.get('helm', '?')}",
        "Dex v2.41.1",
        f"oidc-provider {oidc}",
    ]
    return "real components: " + ", ".join(parts)


def pytest_report_header(config: pytest.Config) -> str:
    return real_components()


def _processes_of_this_run() -> list[tuple[int, str]]:
    mark = f"{_MARK}={os.environ.get(_MARK, '')}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
                found.append((int(entry.name), cmd))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get(_MARK) is None or hasattr(session.config, "workerinput"):
        return
    leaked = _processes_of_this_run()
    for pid, _ in leaked:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if leaked:
        names = "\n".join(f"  pid {pid}: {cmd}" for pid, cmd in leaked)
        print(f"\nprocesses started by the tests were left running (killed now):\n{names}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# What must never reach a log line, anywhere in the suite: anything shaped like a JWT
# (access tokens, ID tokens, service-account tokens and assertions all are) and the
# secrets of the test IdPs' clients and users.
@pytest.fixture(autouse=True)
def _no_secret_in_any_log_record(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test doubles as a leak test: no log record it produced carries a credential."""
    yield
    for when in ("setup", "call", "teardown"):
        for record in caplog.get_records(when):  # type: ignore[arg-type]
            leaked = secrets_in(record.getMessage())
            assert not leaked, f"{record.name} logged a credential: {leaked}"


@pytest.fixture(scope="session")
def tools() -> Tools:
    return locate_tools()


@pytest.fixture(scope="session")
def cluster(tools: Tools) -> Iterator[ControlPlane]:
    cp = ControlPlane(tools).start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def node(tools: Tools) -> Iterator[Node]:
    """The real one-node cluster (tests/node.py), with our images imported. Its teardown
    fails the run if it leaves anything behind on the machine."""
    from tests.images import images
    from tests.node import Node

    if descriptor := os.environ.get("TOKEN_REFRESHER_NODE"):
        # A node started by hand (hack/node.sh) for quick iterations: used, not stopped.
        yield Node.attach(Path(descriptor), tools)
        return
    started = Node(tools, images()).start()
    try:
        yield started
    finally:
        started.stop()
