"""The shell of the Events: carries the aggregator's decisions to the API, never raising.

Events are auxiliary: a failed write is logged and counted and never fails the report
(the sidecar has its 202 by then). `EventRecorder.record` is called once per accepted
report; `series.Aggregator` decides what to write, `events` what it says, and `kubeapi`
makes the call. Writes run as tasks of their own, so a slow API never holds a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from .events import (
    CreateEvent,
    SeriesKey,
    State,
    Write,
    event_body,
    event_name,
    reason_for,
    series_patch,
)
from .kubeapi import KubeApi, KubeApiError
from .metrics import OperatorMetrics
from .series import Aggregator

__all__ = ["EventRecorder"]

logger = logging.getLogger(__name__)


@dataclass(kw_only=True, eq=False)
class EventRecorder:
    """Writes the aggregator's decisions to the API, in threads, never raising.

    Call `record` per accepted report; run `run(stop)` as a task for the delayed series
    updates; `aclose()` writes what is still pending and waits for writes in flight.
    """

    api: KubeApi
    instance: str
    aggregator: Aggregator = field(default_factory=Aggregator)
    clock: Callable[[], float] = time.monotonic
    clock_ns: Callable[[], int] = time.time_ns
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    written: int = field(default=0, init=False)
    failures: int = field(default=0, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    def record(
        self,
        *,
        namespace: str,
        pod: str,
        uid: str,
        state: State,
        error: str | None,
        note: str,
        at: datetime,
        token: str | None = None,
    ) -> None:
        """Count one report; write now if the aggregator says so (in the background).

        `token`: the named token the report is about, None for the default token. Each
        token of a pod has its own series: two failing tokens are two Events.
        """
        type_, reason = reason_for(state)
        now = self.clock()
        if state == "recovered":
            # A recovery ends the token's failure series: the next failure is news again.
            for final in self.aggregator.end(
                namespace=namespace, pod=pod, keep=reason, token=token
            ):
                self._spawn(final)
        error = error if state != "recovered" else None
        key = SeriesKey(namespace, pod, uid, reason, error, token)
        write = self.aggregator.observe(key, type=type_, note=note, at=at, now=now)
        if not (isinstance(write, CreateEvent) and write.count == 1):
            # Counted into the series of an Event rather than making one of its own.
            self.metrics.events_aggregated.inc()
        if write is not None:
            self._spawn(write)

    async def run(self, stop: asyncio.Event, *, tick: float = 1.0) -> None:
        """Write delayed series updates until `stop` is set."""
        while not stop.is_set():
            for write in self.aggregator.due(self.clock()):
                self._spawn(write)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tick)

    async def aclose(self) -> None:
        """Wait for writes in flight, then write the counts still pending, once."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for write in self.aggregator.due(float("inf")):
            self._spawn(write)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, write: Write) -> None:
        task = asyncio.create_task(self._write(write))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, write: Write) -> None:
        key = write.key
        try:
            if isinstance(write, CreateEvent):
                name = event_name(key.pod, self.clock_ns())
                body = event_body(write, name=name, instance=self.instance)
                await self.api.create_event(key.namespace, body)
                self.aggregator.done(write, name=name)
                self.metrics.event_writes.labels("created").inc()
            else:
                await self.api.patch_event(key.namespace, write.name, series_patch(write))
                self.aggregator.done(write)
                self.metrics.event_writes.labels("updated").inc()
            self.written += 1
        except KubeApiError as exc:  # events are auxiliary: log, count, carry on
            status = exc.status
            self.failures += 1
            self.metrics.event_writes.labels("failed").inc()
            self.aggregator.failed(write, gone=status == 404)
            logger.warning(
                "could not %s Event %s for pod %s/%s: %s%s",
                "create" if isinstance(write, CreateEvent) else "update",
                key.reason,
                key.namespace,
                key.pod,
                exc.cause,
                f" (HTTP {status})" if status else "",
            )
