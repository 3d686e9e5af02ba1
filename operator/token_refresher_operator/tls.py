"""A server TLS context that follows renewed certificate files, for `/mutate` and `/report`.

cert-manager and the kubelet replace a Secret's files in place (a symlink swap), so the
operator's two HTTPS endpoints must pick up a renewed pair without a restart: the
apiserver stops trusting the old certificate as soon as the webhook's caBundle changes.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["ReloadingTLS"]

logger = logging.getLogger(__name__)


class ReloadingTLS:
    """A server SSL context that picks up renewed cert/key files for new connections.

    On each handshake, at most once every `every` seconds, the files are looked at again
    and, if changed and loadable, used from then on. A half-written pair keeps the
    previous one. `name` says whose certificate it is in the log lines.
    """

    def __init__(
        self,
        cert: Path,
        key: Path,
        *,
        name: str,
        every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cert, self.key, self.name = cert, key, name
        self._every, self._clock = every, clock
        self._stamp = self._stat()
        self._checked = clock()
        self.context = self._current = self._load()
        self.context.sni_callback = self._on_hello

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        stats = (os.stat(self.cert), os.stat(self.key))
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def _load(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def _on_hello(self, conn: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        now = self._clock()
        if now - self._checked >= self._every:
            self._checked = now
            try:
                stamp = self._stat()
                if stamp != self._stamp:
                    self._current = self._load()
                    self._stamp = stamp
                    logger.info("%s: serving the renewed certificate %s", self.name, self.cert)
            except (OSError, ssl.SSLError) as exc:
                logger.warning("%s: keeping the previous certificate: %s", self.name, exc)
        conn.context = self._current
