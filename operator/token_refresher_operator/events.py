"""Kubernetes Events on the pod from sidecar reports: the words, the counting, the writing.

Three layers, pure to impure. `render_note` turns a report into the sentence
`kubectl describe pod` shows, and scrubs anything that looks like a credential on the way
(DESIGN, "Security stance": a misbehaving sidecar or IdP must not be able to put a token
into an Event). `Aggregator` decides *when* to write: the first report of a kind creates
an Event, repeats only bump that Event's `series` (count, last seen), and
a key is written at most once per `interval` — a sidecar retrying a hundred times gives one
Event "x100", not a hundred. `EventRecorder` is the shell that carries those decisions to
the API. Events are auxiliary: a failed write is logged and never fails the report.

The count is written twice: in `series`, as events.k8s.io/v1 has it, and in `count`,
`firstTimestamp`, `lastTimestamp`, the core/v1 fields that `kubectl get events` (COUNT,
"x7 over 5m") and `kubectl describe pod` read; without them they show no count. The
events.k8s.io/v1 API refuses those fields (there `deprecatedCount`: "needs to be
unset"), so the Events are written through core/v1, which takes both; read through
events.k8s.io/v1 the same Event has its `series` and `deprecatedCount`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from .metrics import OperatorMetrics

__all__ = [
    "ACTION",
    "NOTE_LIMIT",
    "REPORTING_CONTROLLER",
    "Aggregator",
    "CreateEvent",
    "EventRecorder",
    "EventType",
    "PatchSeries",
    "SeriesKey",
    "State",
    "Write",
    "event_body",
    "micro_time",
    "reason_for",
    "redact",
    "render_note",
    "series_patch",
]

logger = logging.getLogger(__name__)

State = Literal["failing", "recovered", "expired"]
EventType = Literal["Normal", "Warning"]

# DESIGN: Events carry the reporting component `token-refresher`, which `kubectl describe`
# shows as their source, like the SidecarNotInjected events kopf posts for us.
REPORTING_CONTROLLER: Final = "token-refresher"
ACTION: Final = "Refresh"
NOTE_LIMIT: Final = 1024  # bytes: events.k8s.io/v1 rejects a longer note

_REASONS: Final[dict[str, tuple[EventType, str]]] = {
    "failing": ("Warning", "TokenRefreshFailed"),
    "recovered": ("Normal", "TokenRefreshRecovered"),
    "expired": ("Warning", "TokenExpired"),
}
REDACTED: Final = "[redacted]"

# What a credential looks like in free text. Over-matching costs a word of an error
# description; under-matching leaks a token into every `kubectl describe`.
_CREDENTIALS = [
    # JWS / JWE compact serialisations: base64url JSON header "eyJ…", then 2 or 4 parts.
    re.compile(r"eyJ[A-Za-z0-9_-]{2,}(?:\.[A-Za-z0-9_-]*){1,4}"),
    # Any three dot-separated base64url runs, header or not.
    re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    # Long opaque strings mixing letters and digits: refresh tokens, secrets, API keys.
    re.compile(
        r"(?=[A-Za-z0-9+/_=.~-]*[0-9])(?=[A-Za-z0-9+/_=.~-]*[A-Za-z])[A-Za-z0-9+/_=.~-]{32,}"
    ),
]
# "client_secret=xyz", "refresh_token: xyz": keep the name, drop the value.
_LABELLED = re.compile(
    r"(?i)\b((?:client_)?secret|(?:access|refresh|id|subject|actor)_token"
    r"|(?:client_)?assertion|password|token)(\s*[=:]\s*)(\"?)[^\s\"&,;]+"
)
# "Bearer xyz": a credential has a digit, a symbol or an inner capital in it, where
# words do not: "Bearer token missing" and "Basic authentication failed" stay.
_SCHEME = re.compile(
    r"\b([Bb]earer|[Bb]asic)(\s+)"
    r"(?=[A-Za-z0-9._~+/=-]*[0-9._~+/=-]|[A-Za-z0-9._~+/=-]+[A-Z])[A-Za-z0-9._~+/=-]{8,}"
)


def redact(text: str) -> str:
    """`text` with every credential-looking value replaced by "[redacted]"."""
    text = _LABELLED.sub(lambda m: f"{m[1]}{m[2]}{m[3]}{REDACTED}", text)
    text = _SCHEME.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    for pattern in _CREDENTIALS:
        text = pattern.sub(REDACTED, text)
    return text


def reason_for(state: State) -> tuple[EventType, str]:
    """The Event type and reason of a report state (DESIGN, "Events")."""
    return _REASONS[state]


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def render_note(
    *,
    state: State,
    error: str | None,
    description: str = "",
    consecutive_failures: int = 0,
    since: datetime | None = None,
    token: str | None = None,
) -> str:
    """The Event's note for a report: IdP error, description, failures, since when.

    Nothing in it comes through unscrubbed: the error code is dropped whole if it looks
    like a credential, the description has credential-looking values redacted. A named
    token's note starts `token <name>: ` ("token payments: refresh failing ..."); the
    default token's reads as it did before there were named ones.
    """
    code = error if error and redact(error) == error else (REDACTED if error else None)
    what = code or "unknown error"
    if description:
        what = f"{what}: {redact(description)}"
    failures = _plural(consecutive_failures, "consecutive failure")
    since_text = f" since {_when(since)}" if since is not None else ""
    if state == "failing":
        note = f"Token refresh failing ({failures}{since_text}): {what}"
    elif state == "expired":
        note = (
            f"Token expired with no successful refresh ({failures}{since_text}); last error: {what}"
        )
    else:
        after = f" after {failures}" if consecutive_failures else ""
        failing = f" (failing{since_text})" if since_text else ""
        last = f"; last error was {what}" if code else ""
        note = f"Token refresh recovered{after}{failing}{last}"
    if token is not None:
        note = f"token {token}: {note.removeprefix('Token ')}"
    return _truncate(note, NOTE_LIMIT)


def _truncate(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - len("…".encode())].decode(errors="ignore") + "…"


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with exactly six fractional digits.

    Never .000000: kubernetes client 37 turns a create body into its typed model and back,
    and Python's isoformat() then drops a zero fraction, which the apiserver refuses to
    parse as a MicroTime. One microsecond later is as true for an Event.
    """
    if moment.microsecond == 0:
        moment = moment.replace(microsecond=1)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- aggregation (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesKey:
    """Reports that count as "the same thing happening again" share one Event."""

    namespace: str
    pod: str
    uid: str
    reason: str
    error: str | None = None
    token: str | None = None  # a named token's name; None: the default token


@dataclass(frozen=True)
class CreateEvent:
    """Create the Event of a series; `count` > 1 when it starts with a series already."""

    key: SeriesKey
    type: EventType
    note: str
    event_time: datetime
    count: int
    last_observed: datetime


@dataclass(frozen=True)
class PatchSeries:
    """Bring an existing Event's series up to `count` occurrences, with the latest note."""

    key: SeriesKey
    name: str
    count: int
    last_observed: datetime
    note: str


Write = CreateEvent | PatchSeries


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
        if series.name is None:
            write = CreateEvent(
                key=key,
                type=series.type,
                note=series.note,
                event_time=series.first,
                count=series.count,
                last_observed=series.last,
            )
        else:
            write = PatchSeries(
                key=key,
                name=series.name,
                count=series.count,
                last_observed=series.last,
                note=series.note,
            )
        series.in_flight = write
        series.wrote_at = now
        return write

    def _forget_oldest(self) -> None:
        oldest = min(self._series, key=lambda k: self._series[k].seen)
        del self._series[oldest]


def event_body(write: CreateEvent, *, name: str, instance: str) -> dict[str, Any]:
    """The Event a CreateEvent stands for, regarding the pod, as core/v1 writes it."""
    key = write.key
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": key.namespace},
        "eventTime": micro_time(write.event_time),
        "reportingComponent": REPORTING_CONTROLLER,
        "reportingInstance": instance[:128],
        "source": {"component": REPORTING_CONTROLLER},
        "action": ACTION,
        "reason": key.reason,
        "type": write.type,
        "message": write.note,
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": key.pod,
            "namespace": key.namespace,
            "uid": key.uid,
        },
        "firstTimestamp": _when(write.event_time),
        **_counted(write.count, write.last_observed),
    }
    if write.count == 1:
        del body["series"]  # a series starts with the second occurrence (count >= 2)
    return body


def series_patch(write: PatchSeries) -> dict[str, Any]:
    """The merge patch that moves an Event's count to `write.count`, with the newest note.

    The note is what the default `kubectl get events` shows of an Event (it has no count
    column): the newest report's note says how many refreshes failed since when.
    """
    return {"message": write.note, **_counted(write.count, write.last_observed)}


def _counted(count: int, last: datetime) -> dict[str, Any]:
    return {
        "series": _series(count, last),
        "count": count,
        "lastTimestamp": _when(last),
    }


def _series(count: int, last: datetime) -> dict[str, Any]:
    return {"count": count, "lastObservedTime": micro_time(last)}


def event_name(pod: str, now_ns: int) -> str:
    """`<pod>.<hex time>`, as client-go names Events; within the 253-character limit."""
    suffix = f".{now_ns:x}"
    return pod[: 253 - len(suffix)] + suffix


# --- the shell ---------------------------------------------------------------------------


class EventRecorder:
    """Writes the aggregator's decisions to the API, in threads, never raising.

    Call `record` per accepted report; run `run(stop)` as a task for the delayed series
    updates; `aclose()` writes what is still pending and waits for writes in flight.
    """

    def __init__(
        self,
        *,
        api_client: Any,
        instance: str,
        aggregator: Aggregator | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        clock_ns: Callable[[], int] = time.time_ns,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        from kubernetes import client

        self._api: Any = client.CoreV1Api(api_client)
        self.metrics = metrics if metrics is not None else OperatorMetrics()
        self.instance = instance
        self.aggregator = aggregator if aggregator is not None else Aggregator()
        self._timeout = timeout
        self._clock = clock
        self._clock_ns = clock_ns
        self._tasks: set[asyncio.Task[None]] = set()
        self.written = 0
        self.failures = 0

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
        now = self._clock()
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
            for write in self.aggregator.due(self._clock()):
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
                name = event_name(key.pod, self._clock_ns())
                body = event_body(write, name=name, instance=self.instance)
                await asyncio.to_thread(self._create, key.namespace, body)
                self.aggregator.done(write, name=name)
                self.metrics.event_writes.labels("created").inc()
            else:
                await asyncio.to_thread(self._patch, key.namespace, write.name, series_patch(write))
                self.aggregator.done(write)
                self.metrics.event_writes.labels("updated").inc()
            self.written += 1
        except Exception as exc:  # events are auxiliary: log, count, carry on
            status = getattr(exc, "status", None)
            self.failures += 1
            self.metrics.event_writes.labels("failed").inc()
            self.aggregator.failed(write, gone=status == 404)
            logger.warning(
                "could not %s Event %s for pod %s/%s: %s%s",
                "create" if isinstance(write, CreateEvent) else "update",
                key.reason,
                key.namespace,
                key.pod,
                type(exc).__name__,
                f" (HTTP {status})" if status else "",
            )

    def _create(self, namespace: str, body: dict[str, Any]) -> None:
        # _preload_content=False: no typed model is built from the answer; we need none.
        self._api.create_namespaced_event(
            namespace, body, _preload_content=False, _request_timeout=self._timeout
        )

    def _patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self._api.patch_namespaced_event(
            name,
            namespace,
            patch,
            _content_type="application/merge-patch+json",
            _preload_content=False,
            _request_timeout=self._timeout,
        )
