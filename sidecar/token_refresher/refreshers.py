"""Every token of one sidecar: a `Refresher` per token, run side by side in one loop.

A pod that calls three APIs needs three tokens, and one process serving them keeps the
per-pod memory flat (issue 17): the tokens share one httpx2 client per CA bundle (its
SSL context is most of a client's memory), one metrics registry and one report client.
They share nothing else: each has its own schedule, jitter, backoff, state file and
report policy, and each runs in its own task, so a token whose IdP is down never delays
another. The pod is ready only when every token is: an app reads all of its files.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Unpack

import httpx2

from .httpclient import new_client
from .metrics import Metrics
from .refresher import PerRefresher, Refresher
from .settings import DEFAULT_TOKEN, Settings

if TYPE_CHECKING:
    from .report import Reporter

__all__ = ["Refreshers"]


class Refreshers:
    """The refreshers of `settings.all_tokens()`, default first, and what they share.

    `transport`, `metrics` and `reporter` replace the real ones in tests, as for
    `Refresher`, and so do `clock`, `random` and `kube_transport`, which every refresher
    is given as they are (`PerRefresher`). `Refreshers.of(refreshers)` wraps refreshers made
    elsewhere (one, for `serve(refresher=...)`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        metrics: Metrics | None = None,
        reporter: Reporter | None = None,
        **each: Unpack[PerRefresher],
    ) -> None:
        tokens = settings.all_tokens()
        self.settings = settings
        self.reporter = reporter
        self.metrics = metrics or Metrics(
            family=any(t.family_secret is not None for t in tokens.values())
        )
        # One client per CA bundle: the tokens of one IdP (or of several public ones)
        # share its connection pool and SSL context.
        by_ca: dict[Path | None, list[Settings]] = {}
        for token in tokens.values():
            by_ca.setdefault(token.ca_file, []).append(token)
        self._clients = {
            ca: new_client(group[0], transport=transport, timeout=max(t.timeout for t in group))
            for ca, group in by_ca.items()
        }
        self.refreshers: dict[str, Refresher] = {
            name: Refresher(
                token,
                name=name,
                client=self._clients[token.ca_file],
                metrics=self.metrics,
                reporter=reporter,
                **each,
            )
            for name, token in tokens.items()
        }

    @classmethod
    def of(cls, refreshers: Mapping[str, Refresher]) -> Refreshers:
        """Refreshers made elsewhere, as one; they keep their own clients."""
        self = cls.__new__(cls)
        first = next(iter(refreshers.values()))
        self.settings = first.settings
        self.reporter = first.reporter
        self.metrics = first.metrics.shared
        self._clients = {}
        self.refreshers = dict(refreshers)
        return self

    @property
    def default(self) -> Refresher:
        return self.refreshers.get(DEFAULT_TOKEN) or next(iter(self.refreshers.values()))

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Refreshers:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for refresher in self.refreshers.values():
            await refresher.aclose()
        for client in self._clients.values():
            await client.aclose()

    def stop(self) -> None:
        for refresher in self.refreshers.values():
            refresher.stop()

    async def run(self) -> None:
        """Run every refresher until `stop()`. Only a bug ends one early; then the others
        are stopped too and the bug is raised, as with a single refresher."""
        tasks = [
            asyncio.create_task(r.run(), name=f"refresh {name}")
            for name, r in self.refreshers.items()
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            self.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            failure = task.exception() if task.done() and not task.cancelled() else None
            if failure is not None:
                raise failure

    async def once(self) -> dict[str, bool]:
        """One attempt for every token, side by side: whether each was written."""
        names = list(self.refreshers)
        results = await asyncio.gather(*(self.refreshers[n].refresh() for n in names))
        return dict(zip(names, results, strict=True))

    # -- what the endpoints show -----------------------------------------------------

    @property
    def alive(self) -> bool:
        """Every token's loop is running."""
        return all(r.alive for r in self.refreshers.values())

    @property
    def ready(self) -> bool:
        """Every token has a valid file: an app needs all of them."""
        return all(r.ready for r in self.refreshers.values())

    def not_ready(self) -> dict[str, str]:
        """The tokens without a valid file, and their state."""
        return {name: r.state for name, r in self.refreshers.items() if not r.ready}

    async def until_ready(self, seconds: float) -> None:
        """Returns as soon as every token is ready, or after `seconds`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self.not_ready():
                    waits = [asyncio.ensure_future(r.landed()) for r in self.refreshers.values()]
                    try:
                        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for waiting in waits:
                            waiting.cancel()

    def not_alive(self) -> list[str]:
        return [name for name, r in self.refreshers.items() if not r.alive]

    def check_output(self) -> None:
        for refresher in self.refreshers.values():
            refresher.check_output()

    def status(self) -> dict[str, object]:
        """The default token's document, as before, and every token's under `tokens`."""
        tokens = {name: r.status() for name, r in self.refreshers.items()}
        return {**tokens[self.default.name], "tokens": tokens}

    def summaries(self) -> dict[str, str]:
        return {name: r.summary() for name, r in self.refreshers.items()}
