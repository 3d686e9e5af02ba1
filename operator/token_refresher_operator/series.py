"""When to write an Event: the aggregation of reports into series, pure, time passed in.

The first report of a kind creates an Event; repeats only bump that Event's `series`
(count, last seen), and a key is written at most once per `interval` — a sidecar retrying
a hundred times gives one Event "x100", not a hundred. Keys are per pod, token, reason and
error (`events.SeriesKey`), so two failing tokens of one pod are two Events. `Aggregator`
only decides; `recorder.EventRecorder` carries the decisions to the API and tells it how
they went.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .events import CreateEvent, EventType, PatchSeries, SeriesKey, Write

__all__ = ["Aggregator"]


@dataclass
class _Series:
    type: EventType
    note: str
    first: datetime
    last: datetime
    count: int
    seen: float  # monotonic time of the last observation
    name: str | None = None  # the Event's name, once created
    written: int = 0  # the count the API holds
    wrote_at: float | None = None  # monotonic time of the last write issued
    in_flight: Write | None = None


class Aggregator:
    """Which Event writes to make, and when; no I/O, time passed in.

    Per key: the first observation creates the Event at once; later ones are counted and
    written as a series patch at most once per `interval` seconds, by `observe` or by the
    next `due`. One write per key is in flight at a time; the shell reports back with
    `done` or `failed`. A key idle for `idle` seconds is forgotten, so the next occurrence
    starts a new Event (the apiserver drops Events after an hour anyway).
    """

    def __init__(
        self, *, interval: float = 10.0, idle: float = 360.0, max_keys: int = 10_000
    ) -> None:
        self.interval = interval
        self.idle = idle
        self.max_keys = max_keys
        self._series: dict[SeriesKey, _Series] = {}

    def __len__(self) -> int:
        return len(self._series)

    def observe(
        self, key: SeriesKey, *, type: EventType, note: str, at: datetime, now: float
    ) -> Write | None:
        """Count one occurrence; the write to make now, if any."""
        series = self._series.get(key)
        if series is not None and now - series.seen >= self.idle and series.in_flight is None:
            del self._series[key]
            series = None
        if series is None:
            if len(self._series) >= self.max_keys:
                self._forget_oldest()
            series = _Series(type=type, note=note, first=at, last=at, count=1, seen=now)
            self._series[key] = series
        else:
            series.count += 1
            if at >= series.last:
                series.note = note  # the newest report's words: its failure count, say
            series.last = max(series.last, at)
            series.seen = now
        return self._next(key, series, now)

    def due(self, now: float) -> list[Write]:
        """Writes whose interval has passed (call every second or so); forgets idle keys."""
        writes = []
        for key, series in list(self._series.items()):
            idle = series.in_flight is None and now - series.seen >= self.idle
            if idle and series.count == series.written:
                del self._series[key]
                continue
            write = self._next(key, series, now)
            if write is not None:
                writes.append(write)
        return writes

    def end(
        self, *, namespace: str, pod: str, keep: str | None = None, token: str | None = None
    ) -> list[Write]:
        """Close every series of a pod's token except reason `keep` (recovered ends
        failing); another token's series go on.

        Returns the last writes of those with uncounted occurrences, whatever the
        interval: the final count should land.
        """
        writes = []
        for key, series in list(self._series.items()):
            if key.namespace != namespace or key.pod != pod or key.token != token:
                continue
            if key.reason == keep:
                continue
            if series.in_flight is None and series.count > series.written:
                writes.append(self._issue(key, series, now=series.seen))
            del self._series[key]
        return writes

    def done(self, write: Write, *, name: str | None = None) -> None:
        """The API took `write` (for a create: the Event's `name`)."""
        series = self._series.get(write.key)
        if series is None or series.in_flight is not write:
            return
        series.in_flight = None
        series.written = write.count
        if isinstance(write, CreateEvent):
            series.name = name

    def failed(self, write: Write, *, gone: bool = False) -> None:
        """The API refused `write`; `gone`: the Event no longer exists, create it again."""
        series = self._series.get(write.key)
        if series is None or series.in_flight is not write:
            return
        series.in_flight = None
        if gone:
            series.name = None
            series.written = 0

    def _next(self, key: SeriesKey, series: _Series, now: float) -> Write | None:
        if series.in_flight is not None or series.count == series.written:
            return None
        if series.wrote_at is not None and now - series.wrote_at < self.interval:
            return None
        return self._issue(key, series, now=now)

    def _issue(self, key: SeriesKey, series: _Series, *, now: float) -> Write:
        write: Write
        # In the order of the fields: (key, type, note, event_time, count, last_observed)
        # and (key, name, count, last_observed, note).
        if series.name is None:
            write = CreateEvent(
                key, series.type, series.note, series.first, series.count, series.last
            )
        else:
            write = PatchSeries(key, series.name, series.count, series.last, series.note)
        series.in_flight = write
        series.wrote_at = now
        return write

    def _forget_oldest(self) -> None:
        oldest = min(self._series, key=lambda k: self._series[k].seen)
        del self._series[oldest]
