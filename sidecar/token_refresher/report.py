"""Telling the operator about refresh trouble, so `kubectl describe pod` shows it.

The operator turns each report into a pod Event (docs/CONTRACTS.md, "Failure reports").
Reports are aggregated by `ReportPolicy` — the first failure, a changed error, then
only when the failure count has doubled, then "recovered" or "expired" — so a pod
failing for a day makes a dozen Events, not thousands. Each token of the pod has its own
policy and its own slot in the mailbox (`for_token`), and its reports name it. Sending
runs in a task of its own: the newest report of a token replaces that token's report not
yet sent (never another token's), a slow or absent operator never delays a refresh, and
an unreachable one is retried with backoff.
Like kopf's events, reports are auxiliary: they never fail the refreshing.
"""

from __future__ import annotations

import asyncio
import json
import random as _random
from dataclasses import dataclass, replace
from typing import Literal

import httpx2

from .clock import Clock, SystemClock
from .credentials import CredentialFile, ssl_context
from .errors import CredentialError
from .logs import get_logger
from .redact import redactor
from .schedule import Random, parse_retry_after, retry_delay
from .settings import DEFAULT_TOKEN, Settings
from .writer import rfc3339

__all__ = ["Report", "ReportPolicy", "Reporter", "TokenReporter"]

log = get_logger(__name__)

ReportState = Literal["failing", "recovered", "expired"]

# Answers that retrying the same body cannot change (CONTRACTS.md): drop the report.
_FINAL_REJECTIONS = frozenset({400, 403, 404, 413})


@dataclass(frozen=True)
class Report:
    state: ReportState
    error: str | None
    description: str | None
    consecutive_failures: int
    since: float  # wall clock: when the current streak of failures began
    token: str = DEFAULT_TOKEN


class ReportPolicy:
    """Which state transitions are worth a report. Pure: no I/O, no clock."""

    def __init__(self, token: str = DEFAULT_TOKEN) -> None:
        self.token = token
        self.last: Report | None = None

    def failure(
        self, error: str, description: str | None, count: int, since: float
    ) -> Report | None:
        report = Report("failing", error, description, count, since, self.token)
        last = self.last
        if last is not None and last.state != "recovered":
            same_error = last.error == error
            if same_error and count < 2 * max(1, last.consecutive_failures):
                return None
            if last.state == "expired":
                # Still expired; keep saying so, with the new numbers.
                report = replace(report, state="expired")
        self.last = report
        return report

    def expired(
        self, error: str | None, description: str | None, count: int, since: float
    ) -> Report | None:
        if self.last is not None and self.last.state == "expired":
            return None
        self.last = Report("expired", error, description, count, since, self.token)
        return self.last

    def success(self) -> Report | None:
        last = self.last
        if last is None or last.state == "recovered":
            return None
        self.last = Report("recovered", None, None, 0, last.since, self.token)
        return self.last


class TokenReporter:
    """What one token's `Refresher` tells the `Reporter`: its own policy, its own slot."""

    def __init__(self, reporter: Reporter, token: str) -> None:
        self._reporter = reporter
        self.policy = ReportPolicy(token)

    def failure(self, error: str, description: str | None, count: int, since: float) -> None:
        self._reporter.publish(self.policy.failure(error, description, count, since))

    def expired(self, error: str | None, description: str | None, count: int, since: float) -> None:
        self._reporter.publish(self.policy.expired(error, description, count, since))

    def success(self) -> None:
        self._reporter.publish(self.policy.success())


class Reporter:
    """Posts reports to REPORT_URL from a background task; `publish` never blocks.

    `failure`, `expired` and `success` are the default token's; `for_token(name)` gives
    another token's.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        random: Random | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        assert settings.report_url is not None  # the caller checks REPORT_URL
        assert settings.report_token_file is not None  # Settings requires it then
        self._settings = settings
        self._url = str(settings.report_url)
        self._clock = clock or SystemClock()
        self._random = random or _random.random
        self._token = CredentialFile(settings.report_token_file, what="report token", always=True)
        verify = ssl_context(cafile=settings.report_ca_file, cadata=settings.report_ca)
        self._client = httpx2.AsyncClient(
            transport=transport, verify=verify, timeout=settings.timeout, trust_env=False
        )
        self._tokens: dict[str, TokenReporter] = {}
        self._default = self.for_token(DEFAULT_TOKEN)
        # The newest unsent report of each token, oldest token first.
        self._pending: dict[str, Report] = {}
        self._wakeup = asyncio.Event()
        self.sent = 0

    def for_token(self, name: str) -> TokenReporter:
        """The reports of the token `name` (one policy per token, made on first use)."""
        view = self._tokens.get(name)
        if view is None:
            view = self._tokens[name] = TokenReporter(self, name)
        return view

    @property
    def policy(self) -> ReportPolicy:
        """The default token's policy."""
        return self._default.policy

    def failure(self, error: str, description: str | None, count: int, since: float) -> None:
        self._default.failure(error, description, count, since)

    def expired(self, error: str | None, description: str | None, count: int, since: float) -> None:
        self._default.expired(error, description, count, since)

    def success(self) -> None:
        self._default.success()

    def publish(self, report: Report | None) -> None:
        """Queue `report` in its token's slot, replacing that token's unsent one."""
        if report is not None:
            self._pending[report.token] = report
            self._wakeup.set()

    async def run(self) -> None:
        """Send pending reports until cancelled; sleeps, never polls, when idle."""
        failures = 0
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            report = next(iter(self._pending.values()), None)
            if report is None:
                continue
            delivered, retry_after = await self._send(report)
            if self._pending.get(report.token) is report and delivered is not None:
                del self._pending[report.token]
            if delivered is None:
                failures += 1
                self._wakeup.set()  # retry: the same report, or a newer one by then
                await self._clock.sleep(
                    retry_delay(
                        failures,
                        initial=self._settings.backoff_initial,
                        maximum=self._settings.backoff_max,
                        random=self._random,
                        retry_after=retry_after,
                    )
                )
            else:
                failures = 0
                if self._pending:
                    self._wakeup.set()  # another token's report is waiting

    def body(self, report: Report) -> dict[str, object]:
        s = self._settings
        body: dict[str, object] = {
            "namespace": s.pod_namespace or "",
            "pod": s.pod_name or "",
            "uid": s.pod_uid or "",
            "state": report.state,
            "error": report.error,
            "description": redactor.scrub(report.description) if report.description else None,
            "consecutive_failures": report.consecutive_failures,
            "since": rfc3339(report.since),
        }
        # The default token's body is the one operators have always accepted.
        if report.token != DEFAULT_TOKEN:
            body["token"] = report.token
        return body

    async def _send(self, report: Report) -> tuple[bool | None, float | None]:
        """(True delivered | False dropped | None retry, Retry-After seconds)."""
        try:
            bearer = self._token.read()
            response = await self._client.post(
                self._url,
                content=json.dumps(self.body(report)).encode("utf-8"),
                headers={
                    "Authorization": f"Bearer {bearer}",
                    "Content-Type": "application/json",
                },
            )
        except CredentialError as exc:
            log.warning("cannot send a report", extra={"reason": str(exc)})
            return None, None
        except httpx2.HTTPError as exc:
            log.warning(
                f"operator at {self._url} is unreachable: {type(exc).__name__}",
                extra={"report_state": report.state, "token": report.token},
            )
            return None, None
        status = response.status_code
        if 200 <= status < 300:
            self.sent += 1
            log.debug(
                "report delivered", extra={"report_state": report.state, "token": report.token}
            )
            return True, None
        if status in _FINAL_REJECTIONS:
            log.warning(
                f"operator at {self._url} refused the report with HTTP {status}; dropping it",
                extra={"report_state": report.state, "token": report.token},
            )
            return False, None
        log.warning(
            f"operator at {self._url} answered HTTP {status}; will retry",
            extra={"report_state": report.state, "token": report.token},
        )
        return None, parse_retry_after(response.headers.get("retry-after"), self._clock.time())

    async def aclose(self) -> None:
        await self._client.aclose()
