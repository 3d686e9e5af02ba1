"""The `token-refresher` console script's first step: listen on LISTEN, then load the rest.

The daemon needs a few hundred milliseconds to import its libraries and check its
settings before its endpoints can answer. The kubelet probes a container from the moment
it starts, and a probe that finds the port closed is a "Startup probe failed" Warning on
every pod. Bound and listening here, within the interpreter's first tens of milliseconds,
the port queues the kubelet's connection until the server takes it, and the startup
probe's `/readyz?wait=` then answers once the first token is on disk. Anything unusual
(an address that does not parse, a port in use, arguments such as `--once`) leaves the
socket to the normal path, which reports it as it always has.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence

__all__ = ["DEFAULT_LISTEN", "listen_early", "main", "parse_listen", "take"]

DEFAULT_LISTEN = "0.0.0.0:8099"
_LISTEN_ENV = "TOKEN_REFRESHER_LISTEN"


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::]:8099`) to (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def listen_early(address: str) -> socket.socket | None:
    """A listening socket on `host:port`, or None if that cannot be had without the
    settings' checks (they will say why). The operator's health port uses it too."""
    try:
        host, port = parse_listen(address)
        family = _family_of(host)
        if family is None or not 0 < port <= 65535:
            return None  # a host name, or "any port": the server resolves and picks
        sock = socket.socket(family, socket.SOCK_STREAM)
    except (ValueError, OSError):
        return None
    try:
        # As asyncio.start_server sets them, so the server takes it over unchanged.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(100)
        sock.setblocking(False)
    except OSError:
        sock.close()
        return None
    return sock


def take(listening: socket.socket | None, port: int) -> socket.socket | None:
    """The early socket for a server about to listen on `port`: itself when it is bound
    there, else None after closing it (the settings named another port after all)."""
    if listening is not None and listening.getsockname()[1] != port:
        listening.close()
        return None
    return listening


def _family_of(host: str) -> socket.AddressFamily | None:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Only the daemon listens; --once and --help do not.
    listening = None if argv else listen_early(os.environ.get(_LISTEN_ENV, DEFAULT_LISTEN))
    from .cli import main as cli_main

    return cli_main(argv, listening=listening)
