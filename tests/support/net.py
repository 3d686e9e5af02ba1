"""Loopback networking for tests and tools: a free port, is a port listening, does a
URL answer 200."""

from __future__ import annotations

import socket
import urllib.request

__all__ = ["free_port", "http_ok", "listening"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts connections on `host:port`."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    """A GET of `url` answers 200 within 2 s (proxies from the environment ignored: the
    URLs are local)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False
