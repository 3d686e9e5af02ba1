"""Fixtures of the fault suite: a loop thread, real oidc-providers shared per session,
the fault proxy in front of one, a report receiver, and sidecar processes.

Everything started here is stopped here: proxies and receivers at the end of the test,
sidecars (SIGTERM to their process group) likewise, the IdPs at the end of the session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.harness import ReportReceiver, SidecarFactory
from tests.idp import OidcProvider, OidcProviderFactory
from tests.support.faultproxy import FaultProxy, LoopThread


@pytest.fixture(scope="session")
def fault_loop() -> Iterator[LoopThread]:
    loop = LoopThread()
    try:
        yield loop
    finally:
        loop.close()


IdPs = Callable[[int], OidcProvider]


@pytest.fixture(scope="session")
def idps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdPs]:
    """`idps(ttl)`: a running oidc-provider whose client_credentials tokens live `ttl`
    seconds, started once per session per ttl (starting one costs a second or two)."""
    factory = OidcProviderFactory(tmp_path_factory.mktemp("fault-idps"))
    running: dict[int, OidcProvider] = {}

    def get(ttl: int) -> OidcProvider:
        idp = running.get(ttl)
        if idp is None or not idp.running:
            idp = running[ttl] = factory.start(ttl=ttl)
        return idp

    try:
        yield get
    finally:
        factory.close()


@pytest.fixture
def proxy_for(fault_loop: LoopThread) -> Iterator[Callable[[OidcProvider], FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(idp: OidcProvider) -> FaultProxy:
        proxy = FaultProxy(fault_loop, ("127.0.0.1", idp.port)).start()
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.stop()


@pytest.fixture
def reports(fault_loop: LoopThread, tmp_path: Path) -> Iterator[ReportReceiver]:
    (tmp_path / "report").mkdir()
    receiver = ReportReceiver(fault_loop, tmp_path / "report").start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def sidecars(tmp_path: Path) -> Iterator[SidecarFactory]:
    factory = SidecarFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()
