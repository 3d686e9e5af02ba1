"""The `/report` endpoint: sidecars tell the operator their refresh is failing.

A report is believed only from the pod it is about (DESIGN, "Security stance"), so each
request walks the same gate, cheapest check first: body size (413), a bearer token (401),
the body's shape (400), a TokenReview of the token (401), the token's pod against the
report's pod (403), a per-pod rate limit (429), and the pod itself: it must exist with
that uid and service account, and carry the injection marker (403). What passes becomes
an Event on the pod (`recorder.EventRecorder`), aggregated and written in the background:
the sidecar gets its 202 whether or not the Event could be written.

This module is the report itself (`Report`, `parse_report`), the per-pod `RateLimiter`
and the endpoint's counters, all pure; `checks` holds the identity and pod checks, and
`reportserver` wires them to aiohttp and the API calls of `kubeapi`.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from token_refresher.settings import DEFAULT_TOKEN, TOKEN_NAME

from .errors import OperatorError
from .events import State
from .metrics import OperatorMetrics

__all__ = [
    "MAX_BODY",
    "RateLimiter",
    "Report",
    "ReportInvalid",
    "ReportMetrics",
    "parse_report",
]

MAX_BODY: Final = 16 * 1024
DESCRIPTION_LIMIT: Final = 512


# --- the report (pure) -------------------------------------------------------------------


def _clean(text: str) -> str:
    # Control and format characters (newlines, ANSI escapes, bidi overrides) would let a
    # report forge log lines or disguise an Event's text.
    kept = "".join(" " if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)
    kept = " ".join(kept.split())
    return kept if len(kept) <= DESCRIPTION_LIMIT else kept[: DESCRIPTION_LIMIT - 1] + "…"


class Report(BaseModel):
    """A sidecar's report (docs/CONTRACTS.md, "Failure reports"), strictly typed.

    Unknown fields are ignored, so a newer sidecar can talk to an older operator. A long
    description is cut to 512 characters rather than refused: the Event matters more.
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    namespace: str = Field(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    pod: str = Field(
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    )
    uid: str = Field(max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    state: State
    error: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    description: str = Field("", max_length=4096)
    consecutive_failures: int = Field(0, ge=0, le=2**31 - 1)
    since: AwareDatetime | None = None
    # Which of the pod's tokens (issue 17): a named token, or "default" (also: absent).
    token: str | None = None

    @field_validator("token")
    @classmethod
    def _token_name(cls, value: str | None) -> str | None:
        if value is None or value == DEFAULT_TOKEN:
            return None
        if len(value) > 63 or not TOKEN_NAME.fullmatch(value):
            # The value is not echoed: the 400 names the field and the rule only.
            raise ValueError(
                "must be a token name (a DNS label: at most 63 lower-case letters, digits "
                "and '-', starting and ending with a letter or digit) or 'default'"
            )
        return value

    @field_validator("description", mode="before")
    @classmethod
    def _no_description(cls, value: object) -> object:
        # A recovery has no error to describe: the sidecar sends null, which means "".
        return "" if value is None else value

    @field_validator("description")
    @classmethod
    def _clean_description(cls, value: str) -> str:
        return _clean(value)


class ReportInvalid(OperatorError):
    """The body is not a report; one line per wrong field, never its value."""


def parse_report(body: bytes) -> Report:
    """The report in a request body, or ReportInvalid."""
    try:
        report = Report.model_validate_json(body, strict=True)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False, include_context=False):
            where = ".".join(str(part) for part in err["loc"]) or "body"
            problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise ReportInvalid(problems) from None
    if report.state == "failing" and report.error is None:
        raise ReportInvalid(["error: required when state is failing"])
    return report


# --- rate limit and counters (pure) ------------------------------------------------------


class RateLimiter:
    """A token bucket per key: `rate` per second, bursts of `burst`. Time passed in."""

    def __init__(self, *, rate: float = 5.0, burst: int = 20, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def allow(self, key: str, *, now: float) -> bool:
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._prune(now)
        self._buckets[key] = (tokens, now)
        return allowed

    def _prune(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket.
        full = [
            k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst
        ]
        for key in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[key]


@dataclass
class ReportMetrics:
    """What the endpoint did: accepted reports by state, rejections by reason.

    Counted here for the shutdown summary, and into the operator's Prometheus metrics
    (`token_refresher_operator_reports_total{result}`: accepted, or the reason).
    """

    accepted: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    exported: OperatorMetrics = field(default_factory=OperatorMetrics, repr=False)

    def accept(self, state: State) -> None:
        self.accepted[state] += 1
        self.exported.reports.labels("accepted").inc()

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1
        self.exported.reports.labels(reason).inc()

    def summary(self) -> str:
        def show(counts: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"

        return (
            f"reports accepted {sum(self.accepted.values())} ({show(self.accepted)}), "
            f"rejected {sum(self.rejected.values())} ({show(self.rejected)})"
        )
