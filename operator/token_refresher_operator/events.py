"""Kubernetes Events on the pod from sidecar reports: what they say and how they are written.

Pure, no I/O. `render_note` turns a report into the sentence `kubectl describe pod` shows,
and scrubs anything that looks like a credential on the way (DESIGN, "Security stance": a
misbehaving sidecar or IdP must not be able to put a token into an Event). The writes the
aggregation decides on (`series.Aggregator`) are `CreateEvent` and `PatchSeries`;
`event_body` and `series_patch` turn them into what the API takes, and
`recorder.EventRecorder` sends them.

The count is written twice: in `series`, as events.k8s.io/v1 has it, and in `count`,
`firstTimestamp`, `lastTimestamp`, the core/v1 fields that `kubectl get events` (COUNT,
"x7 over 5m") and `kubectl describe pod` read; without them they show no count. The
events.k8s.io/v1 API refuses those fields (there `deprecatedCount`: "needs to be
unset"), so the Events are written through core/v1, which takes both; read through
events.k8s.io/v1 the same Event has its `series` and `deprecatedCount`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

__all__ = [
    "ACTION",
    "NOTE_LIMIT",
    "REDACTED",
    "REPORTING_COMPONENT",
    "CreateEvent",
    "EventType",
    "PatchSeries",
    "SeriesKey",
    "State",
    "Write",
    "event_body",
    "event_name",
    "micro_time",
    "reason_for",
    "redact",
    "render_note",
    "series_patch",
]

State = Literal["failing", "recovered", "expired"]
EventType = Literal["Normal", "Warning"]

# DESIGN: Events carry the reporting component `token-refresher`, which `kubectl describe`
# shows as their source; kopf posts the SidecarNotInjected events under the same name.
REPORTING_COMPONENT: Final = "token-refresher"
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


# --- the writes and their bodies ------------------------------------------------------


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


def event_body(write: CreateEvent, *, name: str, instance: str) -> dict[str, Any]:
    """The Event a CreateEvent stands for, regarding the pod, as core/v1 writes it."""
    key = write.key
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": key.namespace},
        "eventTime": micro_time(write.event_time),
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": instance[:128],
        "source": {"component": REPORTING_COMPONENT},
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
        "series": {"count": count, "lastObservedTime": micro_time(last)},
        "count": count,
        "lastTimestamp": _when(last),
    }


def event_name(pod: str, now_ns: int) -> str:
    """`<pod>.<hex time>`, as client-go names Events; within the 253-character limit."""
    suffix = f".{now_ns:x}"
    return pod[: 253 - len(suffix)] + suffix
