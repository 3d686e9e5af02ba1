"""A fault-injecting HTTP proxy on 127.0.0.1, and the loop thread it runs on.

`FaultProxy` sits between a sidecar and a real identity provider. Every request is
handled by the `Fault` set at that moment, so a test switches behaviour at runtime
(`proxy.set(Fault.reset())`) without restarting anything:

| fault                    | what the client sees                                      |
|--------------------------|-----------------------------------------------------------|
| `passthrough()`          | the real IdP's answer, relayed byte for byte              |
| `refuse()`               | connection refused: the listener is closed                |
| `reset()`                | the request is read, then the connection is reset (RST)   |
| `stall()`                | the request is read, then nothing, until the client quits |
| `drip(body, interval)`   | a 200 head, then the body one byte per `interval` seconds |
| `respond(status, ...)`   | a canned answer; `chunked=True` sends it without a length |

Every answer carries `Connection: close`, so no pooled connection outlives a switch:
each request meets the fault of its own moment. Every request is recorded (`seen`)
with its arrival time on the monotonic clock, which is how tests measure the spacing
of retries from the outside.

`LoopThread` runs an asyncio loop in a daemon thread, so synchronous tests (and the
subprocesses they drive) can use servers written with asyncio streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

__all__ = ["Fault", "FaultProxy", "LoopThread", "Seen", "read_request", "serve_https"]

T = TypeVar("T")

FaultKind = Literal["passthrough", "refuse", "reset", "stall", "drip", "respond"]

_REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class LoopThread:
    """An asyncio event loop running in a daemon thread until `close()`."""

    def __init__(self, name: str = "fault-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run `coro` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            self.run(cancel_all())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()


@dataclass(frozen=True)
class Fault:
    """What the proxy does with the next request; build one with the class methods."""

    kind: FaultKind
    name: str
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    chunked: bool = False
    interval: float = 0.0

    @classmethod
    def passthrough(cls) -> Fault:
        return cls("passthrough", "passthrough")

    @classmethod
    def refuse(cls) -> Fault:
        return cls("refuse", "connection refused")

    @classmethod
    def reset(cls) -> Fault:
        return cls("reset", "connection reset")

    @classmethod
    def stall(cls) -> Fault:
        return cls("stall", "accept and stall")

    @classmethod
    def drip(cls, body: bytes, interval: float = 0.2) -> Fault:
        return cls(
            "drip",
            "slow body",
            headers=(("Content-Type", "application/json"),),
            body=body,
            interval=interval,
        )

    @classmethod
    def respond(
        cls,
        status: int,
        body: bytes | str = b"",
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        chunked: bool = False,
        name: str | None = None,
    ) -> Fault:
        data = body.encode() if isinstance(body, str) else body
        head = (("Content-Type", content_type), *(headers or {}).items())
        return cls(
            "respond",
            name or f"HTTP {status}",
            status=status,
            headers=head,
            body=data,
            chunked=chunked,
        )


@dataclass(frozen=True)
class Seen:
    """One request the proxy received, and the fault that answered it."""

    at: float  # time.monotonic() on arrival
    method: str
    path: str
    fault: str


async def read_request(
    reader: asyncio.StreamReader, *, limit: int = 1 << 20
) -> tuple[str, str, list[tuple[str, str]], bytes]:
    """(method, target, headers, body) of one HTTP/1.1 request with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
    if length > limit:
        raise ValueError(f"request body of {length} bytes")
    body = await reader.readexactly(length) if length else b""
    return method, target, headers, body


def _head(status: int, headers: tuple[tuple[str, str], ...], extra: list[str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines += [*extra, "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


class FaultProxy:
    """An HTTP/1.1 proxy to `upstream` whose behaviour is switched with `set()`."""

    def __init__(self, loop: LoopThread, upstream: tuple[str, int]) -> None:
        self._loop = loop
        self.upstream = upstream
        self.port = 0
        self._fault = Fault.passthrough()
        self._server: asyncio.Server | None = None
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._stopping: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    # -- control (from any thread) --------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def fault(self) -> Fault:
        return self._fault

    def start(self) -> FaultProxy:
        self._loop.run(self._listen())
        return self

    def set(self, fault: Fault) -> None:
        """Answer every request from now on with `fault` (refuse closes the listener)."""
        self._loop.run(self._switch(fault))

    def stop(self) -> None:
        self._loop.run(self._shutdown())

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def seen_since(self, since: float, *, method: str = "POST") -> list[Seen]:
        return [s for s in self.seen if s.at >= since and s.method == method]

    # -- on the loop ----------------------------------------------------------------

    async def _listen(self) -> None:
        self._stopping = self._stopping or asyncio.Event()
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _switch(self, fault: Fault) -> None:
        self._fault = fault
        if fault.kind == "refuse":
            await self._close_listener()
        elif self._server is None:
            await self._listen()

    async def _shutdown(self) -> None:
        await self._close_listener()
        if self._stopping is not None:
            self._stopping.set()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client gave up (a timeout on its side): nothing to answer
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method, target, headers, body = await read_request(reader)
        fault = self._fault
        with self._lock:
            self._seen.append(Seen(time.monotonic(), method, target, fault.name))
        if fault.kind == "passthrough":
            await self._relay(method, target, headers, body, writer)
        elif fault.kind == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        elif fault.kind == "stall":
            await self._until_client_leaves(reader)
        elif fault.kind == "drip":
            writer.write(_head(200, fault.headers, [f"Content-Length: {len(fault.body)}"]))
            for i in range(len(fault.body)):
                writer.write(fault.body[i : i + 1])
                await writer.drain()
                await asyncio.sleep(fault.interval)
        elif fault.chunked:
            writer.write(_head(fault.status, fault.headers, ["Transfer-Encoding: chunked"]))
            step = 64 * 1024
            for i in range(0, len(fault.body), step):
                chunk = fault.body[i : i + step]
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        else:
            length = [f"Content-Length: {len(fault.body)}"]
            writer.write(_head(fault.status, fault.headers, length) + fault.body)
            await writer.drain()

    async def _until_client_leaves(self, reader: asyncio.StreamReader) -> None:
        assert self._stopping is not None
        gone = asyncio.ensure_future(reader.read(1))
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({gone, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            stop.cancel()

    async def _relay(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        writer: asyncio.StreamWriter,
    ) -> None:
        host, port = self.upstream
        up_reader, up_writer = await asyncio.open_connection(host, port)
        try:
            skip = {"host", "connection", "keep-alive"}
            lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
            lines += [f"{k}: {v}" for k, v in headers if k.lower() not in skip]
            lines += ["Connection: close", "", ""]
            up_writer.write("\r\n".join(lines).encode("latin-1") + body)
            await up_writer.drain()
            # The upstream closes after its answer (Connection: close): relay until EOF.
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()


Handler = Callable[[str, str, list[tuple[str, str]], bytes], Awaitable[tuple[int, bytes]]]


async def serve_https(
    handler: Handler, *, context: ssl.SSLContext | None, port: int = 0
) -> asyncio.Server:
    """A one-request-per-connection HTTP(S) server on 127.0.0.1 around `handler`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, target, headers, body = await read_request(reader)
            status, payload = await handler(method, target, headers, body)
            head = (("Content-Type", "application/json"),)
            writer.write(_head(status, head, [f"Content-Length: {len(payload)}"]) + payload)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return await asyncio.start_server(handle, "127.0.0.1", port, ssl=context)
