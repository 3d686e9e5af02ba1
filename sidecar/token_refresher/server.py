"""The sidecar's HTTP endpoints: /healthz, /readyz, /status and /metrics.

Deliberately tiny: asyncio streams and just enough HTTP/1.1 to answer a kubelet probe
or a Prometheus scrape — one GET, one response, connection closed. A web framework
would double the sidecar's memory for four fixed routes. Requests are bounded in size
and time so a stuck client cannot hold a connection (or memory) for long. One server
answers for every token of the sidecar (`Refreshers`): ready when all of them are.
`/readyz?wait=S` answers as soon as the tokens are ready, or after S seconds: the
injected startup probe asks so, and the app starts the moment its token is on disk
instead of at the kubelet's next probe, with no "Startup probe failed" Warning for the
second the first token takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable
from urllib.parse import parse_qs

from .boot import parse_listen, take
from .logs import get_logger
from .metrics import CONTENT_TYPE
from .refresher import Refresher
from .refreshers import Refreshers

__all__ = ["StatusServer", "parse_listen"]

log = get_logger(__name__)

_MAX_HEAD = 8192
_READ_TIMEOUT = 5.0
# The longest `/readyz?wait=` honoured: a probe's timeoutSeconds is never much more.
MAX_READY_WAIT = 60.0
_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    503: "Service Unavailable",
}

Response = tuple[int, str, bytes]


class StatusServer:
    """Serves the health, status and metrics of a sidecar's refreshers on LISTEN."""

    def __init__(
        self,
        refresher: Refresher | Refreshers,
        host: str,
        port: int,
        *,
        listening: socket.socket | None = None,
    ) -> None:
        """`listening`: a socket bound and listening since the process started (`boot`),
        served when it is on `port`."""
        if isinstance(refresher, Refresher):
            refresher = Refreshers.of({refresher.name: refresher})
        self._refresher = refresher
        self._host = host
        self._port = port
        self._listening = listening
        self._server: asyncio.Server | None = None
        self._routes: dict[str, Callable[[], Response]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/status": self._status,
            "/metrics": self._metrics,
        }

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        assert self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        listening = take(self._listening, self._port)
        if listening is not None:
            self._server = await asyncio.start_server(self._handle, sock=listening, limit=_MAX_HEAD)
            return
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, limit=_MAX_HEAD
        )

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> StatusServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _healthz(self) -> Response:
        stopped = self._refresher.not_alive()
        if not stopped:
            return 200, "text/plain", b"ok\n"
        return 503, "text/plain", f"refresh loop stopped: {', '.join(stopped)}\n".encode()

    def _readyz(self) -> Response:
        # Probes are when the sidecar looks at the disk: it never polls it.
        self._refresher.check_output()
        waiting = self._refresher.not_ready()
        if not waiting:
            return 200, "text/plain", b"ok\n"
        tokens = ", ".join(f"{name} ({state})" for name, state in waiting.items())
        return 503, "text/plain", f"no valid token: {tokens}\n".encode()

    def _status(self) -> Response:
        self._refresher.check_output()
        body = json.dumps(self._refresher.status(), indent=2).encode() + b"\n"
        return 200, "application/json", body

    def _metrics(self) -> Response:
        return 200, CONTENT_TYPE, self._refresher.metrics.render()

    async def answer(self, method: str, target: str) -> Response:
        """`respond`, after waiting for the tokens when `/readyz` asks to (`?wait=S`)."""
        path, _, query = target.partition("?")
        if path == "/readyz" and query and method in ("GET", "HEAD"):
            values = parse_qs(query).get("wait", [])
            try:
                wait = float(values[-1]) if values else 0.0
            except ValueError:
                wait = -1.0
            if not 0 <= wait <= MAX_READY_WAIT:  # also NaN
                message = f"wait must be seconds from 0 to {MAX_READY_WAIT:g}\n"
                return 400, "text/plain", message.encode()
            if wait:
                await self._refresher.until_ready(wait)  # at once when ready already
        return self.respond(method, target)

    def respond(self, method: str, target: str) -> Response:
        """The response to one request line. Pure routing, tested without sockets."""
        route = self._routes.get(target.split("?", 1)[0])
        if route is None:
            return 404, "text/plain", b"not found\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        return route()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                status, ctype, body = 400, "text/plain", b"bad request\n"
                method = "GET"
            else:
                method, target = parts[0], parts[1]
                status, ctype, body = await self.answer(method, target)
            payload = b"" if method == "HEAD" else body
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
                + payload
            )
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass  # a probe that hung up or sent garbage; nothing to tell anyone
        except Exception:
            log.exception("the status endpoint failed")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
