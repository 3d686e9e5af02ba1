"""The console script listens before it loads the daemon (`token_refresher.boot`): a probe
that connects in the process's first moments is queued, not refused, and answered."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from tests.support import free_port, python_output
from token_refresher import Refresher, StatusServer, boot


def test_the_port_is_listening_before_the_libraries_are_loaded() -> None:
    port = free_port()
    program = (
        "import sys, json\n"
        "from token_refresher import boot\n"
        f"sock = boot.listen_early('127.0.0.1:{port}')\n"
        "heavy = ['pydantic', 'httpx2', 'prometheus_client', 'token_refresher.cli']\n"
        "print(json.dumps({'bound': sock.getsockname()[1],"
        " 'loaded': [m for m in heavy if m in sys.modules]}))\n"
    )
    assert json.loads(python_output(program, timeout=30)) == {"bound": port, "loaded": []}


@pytest.mark.parametrize(
    "listen", ["nowhere", "localhost:8099", "127.0.0.1:0", "127.0.0.1:99999", "[::1]:x"]
)
def test_what_it_cannot_bind_plainly_is_left_to_the_settings(listen: str) -> None:
    assert boot.listen_early(listen) is None


def test_a_port_in_use_is_left_to_the_settings_and_arguments_bind_nothing(monkeypatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        assert boot.listen_early(busy) is None

    def refuse(address: str) -> None:
        raise AssertionError("--help must not listen")

    monkeypatch.setattr(boot, "listen_early", refuse)
    with pytest.raises(SystemExit) as exited:
        boot.main(["--help"])
    assert exited.value.code == 0


async def test_a_connection_queued_before_the_server_started_is_answered(
    make_settings, idp, clock, half
) -> None:
    port = free_port()
    sock = boot.listen_early(f"127.0.0.1:{port}")
    assert sock is not None
    # The kubelet's probe, while the daemon is still importing its libraries.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /readyz?wait=10 HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    refresher = Refresher(make_settings(), transport=idp.transport, clock=clock, random=half)
    async with refresher, StatusServer(refresher, "127.0.0.1", port, listening=sock) as server:
        assert server.port == port
        assert await refresher.refresh()  # the first token, then the probe's answer
        answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 200 OK")


def test_a_server_takes_the_early_socket_only_on_its_own_port() -> None:
    sock = boot.listen_early(f"127.0.0.1:{free_port()}")
    assert sock is not None
    with sock:
        assert boot.take(sock, sock.getsockname()[1]) is sock
        assert boot.take(sock, sock.getsockname()[1] + 1) is None  # settings differ
        assert sock.fileno() == -1  # closed, so the server binds its own
    assert boot.take(None, 8099) is None
