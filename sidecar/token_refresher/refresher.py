"""The refresh loop: fetch a token, write it, sleep until it is due, and cope.

`Refresher` is the thin shell around the pure parts: it asks `schedule` when to act,
`source` for a token, `writer` to keep it, and tells `metrics`, `report` and the logs
how it went. It owns no clock and no network of its own — both
are passed in — so a test can drive a whole outage in milliseconds. While idle it
sleeps until the next refresh or the token's expiry, whichever is sooner: no periodic
wake-ups, so an idle sidecar costs no CPU. The one exception is the wait after a
permanent error, when it looks at the credential files once a second (`watch`), so
that the fix a person makes to a Secret is tried at once.

It is longer than our other modules because it is one state machine: the loop, the
bookkeeping of each attempt (state, backoff ladder, expiry, counters) and the `/status`
document and shutdown line that report that same state read and write the same dozen
fields; split, each half would reach into the other's. What is not that state lives
beside it (`schedule`, `source`, `writer`, `watch`, `httpclient`).
"""

from __future__ import annotations

import asyncio
import math
import random as _random
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import httpx2

from .clock import Clock, SystemClock
from .errors import OutputError, RefreshFailure
from .grants import Credentials
from .httpclient import new_client
from .idp import IdP
from .logs import current_token, get_logger
from .metrics import Metrics, Outcome
from .redact import redactor
from .schedule import Pace, Random, permanent_delay, retry_delay
from .settings import DEFAULT_TOKEN, Settings
from .source import TokenSource
from .tokens import Token
from .watch import POLL_INTERVAL, CredentialWatch, watched_files
from .writer import TokenWriter, read_expiry, remove_temporaries, rfc3339

if TYPE_CHECKING:
    # Imported where used: the family's Kubernetes client only with FAMILY_SECRET, the
    # report client only with REPORT_URL (cli.serve); a sidecar without them never
    # loads either.
    from .holder import FamilyMember
    from .kube import KubeClient
    from .report import Reporter, TokenReporter

__all__ = ["PerRefresher", "Refresher", "RefresherState"]

log = get_logger(__name__)

RefresherState = Literal["starting", "ready", "retrying", "failing", "expired", "stopped"]


class PerRefresher(TypedDict, total=False):
    """What tests replace in each refresher alike; `Refreshers` passes them through."""

    clock: Clock | None
    random: Random | None
    kube_transport: httpx2.AsyncBaseTransport | None


@dataclass(frozen=True)
class _LastError:
    error: str
    message: str
    permanent: bool
    at: float


class Refresher:
    """Keeps one token fresh in `settings.output`.

    Use as `async with Refresher(settings) as r: await r.run()`; `stop()` ends `run`.
    `transport` (an httpx2 transport, e.g. `MockTransport`), `clock`, `random`,
    `metrics` and `reporter` replace the real ones in tests. `name` is the token's
    (`default` for the unnamed one): its label in metrics, logs and reports. `client`,
    `metrics` and `reporter` may be shared by the refreshers of one sidecar
    (`Refreshers`); a shared client is closed by whoever made it.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        name: str = DEFAULT_TOKEN,
        transport: httpx2.AsyncBaseTransport | None = None,
        client: httpx2.AsyncClient | None = None,
        clock: Clock | None = None,
        random: Random | None = None,
        metrics: Metrics | None = None,
        reporter: Reporter | None = None,
        kube_transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.clock: Clock = clock or SystemClock()
        shared_metrics = metrics or Metrics(family=settings.family_secret is not None)
        self.metrics = shared_metrics.token(name)
        self.reporter = reporter
        self._reports: Reporter | TokenReporter | None = (
            reporter.for_token(name) if reporter is not None else None
        )
        self._random = random or _random.random
        self._pace = Pace(settings.refresh_ratio, settings.jitter, settings.min_refresh_interval)
        self._owns_client = client is None
        self._client = client or new_client(settings, transport=transport)
        self._idp = IdP(settings, self._client, self.clock)
        self._credentials = Credentials(settings, clock=self.clock)
        self._kube: KubeClient | None = None
        self.family: FamilyMember | None = None
        if settings.family_secret is not None:
            from .holder import FamilyMember
            from .kube import KubeClient, in_cluster_url

            self._kube = KubeClient(
                api_url=str(settings.kubernetes_api)
                if settings.kubernetes_api
                else in_cluster_url(),
                namespace=settings.pod_namespace or _namespace_beside(settings),
                token_file=settings.kubernetes_token_file,
                ca_file=settings.kubernetes_ca_file,
                timeout=settings.timeout,
                transport=kube_transport,
                on_request=self.metrics.apiserver_request,
            )
            self.family = FamilyMember(settings, self._kube, self.clock)
        self._source = TokenSource(settings, self._idp, self._credentials, family=self.family)
        self._writer = TokenWriter(settings.output, settings.format, settings.file_mode)
        self._watch = CredentialWatch(watched_files(settings))
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # the plan changed while the loop slept
        self._running = False
        self._stopped = False
        self._started_mono = self.clock.monotonic()
        self._next_mono = self._started_mono
        self._disk_expiry: tuple[float, float] | None = None  # (monotonic, wall)
        self._expired = False
        self.refresh_count = 0
        self.failure_count = 0
        self.consecutive_failures = 0
        self._failing_since: float | None = None
        self._last_success: float | None = None
        self._last_error: _LastError | None = None
        self._permanent_failures = 0  # in a row: how far up the permanent_delay ladder
        self._permanent_wait = False  # waiting after a permanent error
        # Set (and replaced) whenever a token lands on disk: what a startup probe that
        # asks to wait (`/readyz?wait=`) waits on, instead of polling.
        self._landed = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Refresher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        with current_token(self.name):
            if self.family is not None:
                await self.family.release()
                self._record_family()
            if self._kube is not None:
                await self._kube.aclose()
            if self._owns_client:
                await self._client.aclose()

    def stop(self) -> None:
        """Make `run` return soon; an attempt in flight is abandoned, never half-written."""
        if self.family is not None:
            self.family.stop()  # before the loop wakes: a watch event may be due first
        self._stop.set()

    @property
    def alive(self) -> bool:
        return self._running

    @property
    def ready(self) -> bool:
        """A token that has not expired is on disk."""
        return self._valid and self._writer.intact()

    @property
    def _valid(self) -> bool:
        return self._disk_expiry is not None and self.clock.monotonic() < self._disk_expiry[0]

    def check_output(self) -> None:
        """Put the token file back if someone deleted or replaced it while it is valid.

        Called on every /readyz and /status request and whenever the loop wakes, so a
        probing kubelet notices within a probe period; the sidecar never polls the disk.
        When the file cannot be put back (the volume is gone), that is a failure like
        any other: reported, and retried by refreshing.
        """
        if not self._valid or not self._writer.lost():
            return
        with current_token(self.name):
            try:
                self._writer.restore(now=self.clock.time())
            except OutputError as exc:
                self._failed(exc, self.clock.monotonic())
                self._wake.set()
                return
            log.warning(
                f"{self.settings.output} was deleted or replaced by someone else; restored it"
            )

    @property
    def state(self) -> RefresherState:
        if self._stopped:
            return "stopped"
        if self.ready:
            return "retrying" if self.consecutive_failures else "ready"
        if self._expired:
            return "expired"
        return "failing" if self.consecutive_failures else "starting"

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Refresh until `stop()`. Raises only on bugs; IdP and disk trouble is retried."""
        self._running = True
        try:
            with current_token(self.name):
                await self._loop()
        finally:
            self._running = False
            self._stopped = True

    async def _loop(self) -> None:
        self._adopt_existing_file()
        while not self._stop.is_set():
            self.check_output()
            self._wake.clear()
            now = self.clock.monotonic()
            self._retry_if_credentials_changed(now)
            if self._disk_expiry is not None and self._disk_expiry[0] <= now:
                self._expire()
            elif self._next_mono <= now:
                await self._unless_stopped(self.refresh())
            else:
                wake = self._next_mono
                if self._disk_expiry is not None:
                    wake = min(wake, self._disk_expiry[0])
                if self._watching:
                    wake = min(wake, now + POLL_INTERVAL)
                await self._unless_stopped(self.clock.sleep(wake - now), self._wake)

    async def _unless_stopped(
        self, work: Awaitable[Any], wake: asyncio.Event | None = None
    ) -> None:
        task = asyncio.ensure_future(work)
        waiters = {task, asyncio.ensure_future(self._stop.wait())}
        if wake is not None:
            waiters.add(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in waiters:
                pending.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        failure = task.exception() if task.done() and not task.cancelled() else None
        if failure is not None:
            raise failure

    async def refresh(self) -> bool:
        """One attempt: fetch a token and write it. Returns whether it worked.

        Never raises for IdP, credential or disk trouble: they are logged, counted,
        reported, and the next attempt is planned (`next_refresh_in`).
        """
        with current_token(self.name):
            started = self.clock.monotonic()
            self._watch.snapshot()  # what this attempt reads; a later change is a person's fix
            try:
                token = await self._source.fetch()
                self._writer.write(token, now=self.clock.time())
            except RefreshFailure as exc:
                self._failed(exc, started)
                return False
            finally:
                self._record_family()
            self._succeeded(token, started)
            return True

    def _record_family(self) -> None:
        if self.family is not None:
            record = self.family.record
            self.metrics.family(
                holder=record.holder if record else None,
                holds=self.family.holds,
                rotated_at=record.rotated_at if record else None,
            )

    @property
    def _watching(self) -> bool:
        return self._permanent_wait and bool(self._watch.paths)

    def _retry_if_credentials_changed(self, now: float) -> None:
        if not self._watching:
            return
        changed = self._watch.changed()
        if changed is None:
            return
        log.info(f"{changed} changed after a permanent error; retrying now")
        self._permanent_wait = False
        self._permanent_failures = 0  # a new credential starts the ladder again
        self._next_mono = now

    # -- bookkeeping -----------------------------------------------------------------

    def _succeeded(self, token: Token, started: float) -> None:
        now = self.clock.monotonic()
        duration = now - started
        self._disk_expiry = (token.expires_mono, token.expires_wall)
        self._expired = False
        recovered_after = self.consecutive_failures
        # The first token of the process is refreshed from a wider window: pods started
        # together (a rollout, a node drain) must not stay together (Pace.first_refresh).
        # With a shared family only its holder refreshes, so there is no herd to spread,
        # and the claim it gives the others assumes the usual window (family.claim_seconds).
        first = self.refresh_count == 0 and self.family is None
        plan = self._pace.first_refresh if first else self._pace.next_refresh
        self.refresh_count += 1
        self.consecutive_failures = 0
        self._permanent_failures = 0
        self._permanent_wait = False
        self._failing_since = None
        self._last_success = self.clock.time()
        self._next_mono = plan(token.received_mono, token.lifetime, self._random)
        if self.family is not None and not self.family.holds:
            # A follower goes straight back to waiting (a watch on the family Secret) for
            # the holder's next token, so it has that token within moments of the holder.
            self._next_mono = now
        self._record("success", duration, token.expires_wall)
        fields = {
            "expires_at": rfc3339(token.expires_wall),
            "lifetime": round(token.lifetime, 3),
            "lifetime_source": token.lifetime_source,
            "next_refresh_in": round(self._next_mono - now, 3),
        }
        if recovered_after:
            log.info(f"token refreshed after {recovered_after} failed attempts", extra=fields)
        else:
            log.info("token refreshed", extra=fields)
        if self._reports is not None:
            self._reports.success()
        self._land()

    def _land(self) -> None:
        self._landed.set()
        self._landed = asyncio.Event()

    async def landed(self) -> None:
        """Returns when this refresher next puts a valid token on disk."""
        await self._landed.wait()

    def _failed(self, exc: RefreshFailure, started: float) -> None:
        now = self.clock.monotonic()
        wall = self.clock.time()
        self.failure_count += 1
        self.consecutive_failures += 1
        if self._failing_since is None:
            self._failing_since = wall
        error, permanent, retry_after = exc.error, exc.permanent, exc.retry_after
        description = exc.description
        message = redactor.scrub(str(exc))
        self._last_error = _LastError(error, message, permanent, wall)
        self._permanent_wait = permanent
        if permanent:
            self._permanent_failures += 1
            delay = permanent_delay(
                self._permanent_failures,
                ceiling=self.settings.permanent_error_interval,
                random=self._random,
                retry_after=retry_after,
            )
        else:
            until_expiry = self._disk_expiry[0] - now if self.ready and self._disk_expiry else None
            delay = retry_delay(
                self.consecutive_failures,
                initial=self.settings.backoff_initial,
                maximum=self.settings.backoff_max,
                random=self._random,
                retry_after=retry_after,
                until_expiry=until_expiry,
            )
        self._next_mono = now + delay
        self._record(
            "permanent_error" if permanent else "transient_error",
            now - started,
            self._disk_expiry[1] if self._disk_expiry else None,
        )
        level = log.error if permanent or not self.ready else log.warning
        level(
            message,
            extra={
                "error": error,
                "permanent": permanent,
                "consecutive_failures": self.consecutive_failures,
                "retry_in": round(delay, 3),
                "retry_on_change": self._watching,
                "token_valid": self.ready,
            },
        )
        if self._reports is not None:
            self._reports.failure(
                error, description or message, self.consecutive_failures, self._failing_since
            )

    def _record(self, outcome: Outcome, duration: float, expiry: float | None) -> None:
        m = self.metrics
        m.observe(outcome, duration)
        m.consecutive_failures.set(self.consecutive_failures)
        m.token_expiry.set(expiry or 0)
        if self._last_success is not None:
            m.last_success.set(self._last_success)
        m.next_refresh.set(self._wall(self._next_mono))

    def _expire(self) -> None:
        """The token on disk expired and no refresh succeeded: say so, and remove it."""
        self._disk_expiry = None
        self._expired = True
        self.metrics.token_expiry.set(0)
        removed = ""
        if self.settings.on_expiry == "remove":
            try:
                self._writer.remove()
                removed = f"; removed {self.settings.output}"
            except OutputError as exc:
                log.error(str(exc))
        last = self._last_error
        log.error(
            f"the token expired with no successful refresh{removed}",
            extra={
                "consecutive_failures": self.consecutive_failures,
                "error": last.error if last else None,
            },
        )
        if self._reports is not None:
            self._reports.expired(
                last.error if last else None,
                last.message if last else None,
                self.consecutive_failures,
                self._failing_since or self.clock.time(),
            )

    def _adopt_existing_file(self) -> None:
        """Make sense of a token file left by a previous run of this container."""
        path = self.settings.output
        # A run killed mid-write leaves its temporary file; on a small memory-backed
        # volume, enough restarts would fill it.
        removed = remove_temporaries(path) + remove_temporaries(self.settings.effective_state_file)
        if removed:
            log.info(f"removed {removed} temporary files left by an interrupted previous run")
        if not path.exists():
            return
        now_wall = self.clock.time()
        expires_wall = read_expiry(path, self.settings.format)
        if expires_wall is not None and expires_wall > now_wall:
            self._disk_expiry = (self.clock.monotonic() + expires_wall - now_wall, expires_wall)
            self._writer.adopt()
            self.metrics.token_expiry.set(expires_wall)
            self._land()
            log.info(
                "kept the token left by a previous run", extra={"expires_at": rfc3339(expires_wall)}
            )
        elif self.settings.on_expiry == "remove":
            # Expired, or of unknown age (an opaque raw token): we cannot vouch for it.
            try:
                self._writer.remove()
                log.info(f"removed the stale token file {path} left by a previous run")
            except OutputError as exc:
                log.error(str(exc))

    # -- what we show ----------------------------------------------------------------

    def _wall(self, mono: float) -> float:
        return self.clock.time() + (mono - self.clock.monotonic())

    @property
    def next_refresh_in(self) -> float:
        """Seconds until the next planned attempt (0 when due)."""
        return max(0.0, self._next_mono - self.clock.monotonic())

    def status(self) -> dict[str, object]:
        """The `/status` document: what an operator wants to know, never a secret."""
        last = self._last_error
        return {
            "state": self.state,
            "ready": self.ready,
            "expires_at": rfc3339(self._disk_expiry[1]) if self._disk_expiry else None,
            "last_success": rfc3339(self._last_success) if self._last_success else None,
            "consecutive_failures": self.consecutive_failures,
            "last_error": None
            if last is None
            else {
                "error": last.error,
                "message": redactor.scrub(last.message),
                "permanent": last.permanent,
                "at": rfc3339(last.at),
            },
            "next_refresh_at": None if self._stopped else rfc3339(self._wall(self._next_mono)),
            "waiting": self._waiting(),
            "watched_files": [str(path) for path in self._watch.paths] if self._watching else [],
            "refresh_count": self.refresh_count,
            "grant": self.settings.grant.value,
            "token_endpoint": self._idp.token_url,
            "output": str(self.settings.output),
            "family": self.family.status() if self.family is not None else None,
        }

    def _waiting(self) -> str | None:
        """After a permanent error, what the next attempt waits for, in words."""
        if not self._permanent_wait or self._stopped:
            return None
        left = _duration(self.next_refresh_in)
        if self._watching:
            return f"waiting for a credential change or {left}"
        return f"waiting {left}"

    def summary(self) -> str:
        """One line for the log at shutdown, arq style."""
        uptime = self.clock.monotonic() - self._started_mono
        hours, rest = divmod(int(uptime), 3600)
        minutes, seconds = divmod(rest, 60)
        expiry = (
            f"token valid until {rfc3339(self._disk_expiry[1])}"
            if self.ready and self._disk_expiry
            else "no valid token on disk"
        )
        return (
            f"stopped after {hours}h{minutes:02d}m{seconds:02d}s: "
            f"{_plural(self.refresh_count, 'refresh', 'refreshes')}, "
            f"{_plural(self.failure_count, 'failed attempt', 'failed attempts')}, {expiry}"
        )


def _namespace_beside(settings: Settings) -> str | None:
    """The pod's namespace from the service-account volume, as client-go reads it."""
    try:
        return (settings.kubernetes_token_file.parent / "namespace").read_text().strip() or None
    except OSError:
        return None


def _duration(seconds: float) -> str:
    """4m12s, 1h00m05s, 7s: rounded up, so a wait never reads shorter than it is."""
    hours, rest = divmod(math.ceil(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"
