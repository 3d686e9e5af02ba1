"""One pod's part in a shared refresh-token family: read the family Secret, decide
(`family.plan`), and act — adopt the holder's access token, wait for it, or claim the
family and present its refresh token to the IdP.

Each fetch is a small loop over read → plan → act, because any compare-and-swap can
lose to another pod's write; losing only means reading again. A rotated refresh token
is written to the Secret before the fetch returns; if the apiserver is away at that
moment, the write is retried for as long as our claim lasts (`lease`), and held in
memory for the next fetch after that.

It runs past 300 lines because it is one protocol: the fetch loop and each of its steps
(read, wait, claim, present, store, release) read and write the same three fields, the
last observation of the Secret, the rotation not yet stored, and the expiry of what this
pod holds; split, each part would reach into the other's. The decisions themselves are
pure and live apart (`family.plan`), as the Kubernetes calls do (`kube`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from .clock import Clock
from .credentials import CredentialFile
from .errors import CoordinationError, CredentialError, TokenEndpointError
from .family import (
    FAMILY_KEY,
    FamilyRecord,
    Observation,
    claim_seconds,
    decode,
    encode,
    plan,
)
from .kube import Conflict, KubeClient
from .logs import get_logger
from .redact import redactor
from .settings import Settings
from .tokens import Token
from .writer import rfc3339

__all__ = ["FamilyMember"]

log = get_logger(__name__)

Present = Callable[[str], Awaitable[Token]]

# A follower re-reads at least this often while it waits, so a watch the network
# silently dropped costs at most this much delay.
_MAX_WATCH = 60.0
_WRITE_RETRY = 0.5
_FRESH = 1.0
# Seconds a rotated token's write is retried before the fetch returns without it (it is
# kept and written at the next fetch), and a stop waits for it beyond TIMEOUT.
_STOP_GRACE = 5.0


@dataclass
class _Pending:
    """A result the IdP gave us that the Secret does not have yet."""

    record: FamilyRecord
    resource_version: str


def _identity(settings: Settings) -> str:
    """`<pod name>@<first 8 of its UID>`: a pod a StatefulSet recreates under the same
    name while the old one still runs somewhere (a force-deleted pod on a lost node) is
    someone else, not us — two processes that both thought they held the family could
    each present its refresh token."""
    name = settings.pod_name or socket.gethostname()
    return f"{name}@{settings.pod_uid[:8]}" if settings.pod_uid else name


class FamilyMember:
    """Gets this pod its token through the family Secret `settings.family_secret`."""

    def __init__(
        self,
        settings: Settings,
        kube: KubeClient,
        clock: Clock,
        *,
        identity: str | None = None,
    ) -> None:
        assert settings.family_secret is not None
        self.secret = settings.family_secret
        self.identity = identity or _identity(settings)
        self._settings = settings
        self._kube = kube
        self._clock = clock
        self._bootstrap = (
            CredentialFile(settings.refresh_token_file, what="refresh token", always=True)
            if settings.refresh_token_file is not None
            else None
        )
        self._observed: Observation | None = None
        self._pending: _Pending | None = None
        self._have_expiry: float | None = None
        self._fresh_at: float | None = None  # when _observed came from a watch event
        # A claim write whose answer we never saw (cancelled by a stop): the apiserver
        # may hold it, naming us, and nobody else may present until it runs out.
        self._claim_unseen = False
        self._stopping = False
        self.role: str = "unknown"

    # -- what /status and the metrics show -------------------------------------------

    @property
    def record(self) -> FamilyRecord | None:
        return self._observed.record if self._observed is not None else None

    @property
    def holds(self) -> bool:
        record = self.record
        return record is not None and record.holder == self.identity

    def status(self) -> dict[str, object]:
        record = self.record
        return {
            "secret": f"{self._kube.namespace}/{self.secret}",
            "me": self.identity,
            "role": self.role,
            "holder": record.holder if record else None,
            "last_rotation": rfc3339(record.rotated_at) if record and record.rotated_at else None,
            "rotated_by": record.rotated_by if record else None,
            "rotations": record.rotations if record else 0,
            "unwritten_rotation": self._pending is not None,
        }

    # -- the fetch -------------------------------------------------------------------

    async def fetch(self, present: Present) -> Token:
        """A token for this pod: the family's, or a fresh one this pod got as holder.

        `present(refresh_token)` asks the IdP; it raises TokenEndpointError."""
        if self._pending is not None:
            await self._flush_pending()
            if self._pending is not None:
                # Never go on without it: the record still names the token we presented.
                raise CoordinationError(
                    f"the rotated refresh token is not stored in secret "
                    f"{self._kube.namespace}/{self.secret} yet; holding it and trying again",
                    error="apiserver_unavailable",
                )
        while True:
            observed = await self._read()
            now_mono, now_wall = self._clock.monotonic(), self._clock.time()
            bootstrap = self._read_bootstrap()
            decision = plan(
                observed,
                me=self.identity,
                bootstrap=bootstrap,
                have_expiry=self._have_expiry,
                now_mono=now_mono,
                now_wall=now_wall,
            )
            record = observed.record
            if decision.action == "adopt":
                assert record is not None
                self.role = "holder" if record.holder == self.identity else "follower"
                return self._adopt(record)
            if decision.action == "wait":
                self.role = "follower"
                assert decision.until_mono is not None
                await self._wait(observed, decision.until_mono)
                continue
            if decision.action == "rejected":
                self.role = "follower"
                raise CoordinationError(
                    f"the family in secret {self._kube.namespace}/{self.secret} has no usable "
                    f"refresh token: {decision.why}; put a new refresh token in the bootstrap "
                    "Secret to start a new family",
                    error="invalid_grant",
                    permanent=True,
                )
            # seed or present: claim the family by compare-and-swap, then present.
            if self._stopping:
                # A pod on its way out must not claim: it would hold the family with a
                # `presenting` claim and then be killed, and the others would wait out
                # the whole lease with their tokens expiring. The refresher abandons
                # this attempt, as stop() promises.
                raise asyncio.CancelledError
            lease = self._settings.family_lease
            if decision.action == "seed":
                assert bootstrap is not None
                claimed = (record or FamilyRecord()).seeded(
                    bootstrap, holder=self.identity, claim=lease
                )
            else:
                assert record is not None
                claimed = record.claimed(self.identity, claim=lease)
            # Set until the apiserver's answer is in: cut short (a stop, a timeout), the
            # write may have been applied, and release() must go and look.
            self._claim_unseen = True
            try:
                observed = await self._write(observed, claimed)
            except Conflict:
                self._claim_unseen = False
                continue  # someone else wrote first: read again, decide again
            self._claim_unseen = False
            mine = record is not None and record.holder == self.identity
            (log.debug if mine else log.info)(
                f"claimed the token family: {decision.why}", extra={"secret": self.secret}
            )
            self.role = "holder"
            return await self._present(observed, claimed, present)

    def stop(self) -> None:
        """This pod is leaving: from now on it never claims the family (see `fetch`)."""
        self._stopping = True

    async def release(self) -> None:
        """Hand the family back on shutdown, so another pod need not wait for the claim
        to run out. Best effort: a lost release costs one claim period."""
        if self._pending is not None:
            await self._flush_pending()  # one more try: a lost rotation is the worst case
        if self._claim_unseen and self._pending is None:
            # A claim cut short before its answer: if the apiserver took it, it names us
            # as presenting a token we never sent, and it is ours to give back.
            with contextlib.suppress(CoordinationError):
                self._observe(await self._kube.get_secret(self.secret))
                self._claim_unseen = False
        observed = self._observed
        if observed is None or self._pending is not None or not self.holds:
            return
        record = observed.record
        assert record is not None
        try:
            await self._write(observed, record.released())
            log.info("released the token family", extra={"secret": self.secret})
        except (Conflict, CoordinationError) as exc:
            log.warning(f"could not release the token family: {exc}")

    # -- the steps -------------------------------------------------------------------

    async def _read(self) -> Observation:
        # What a watch event or our own write just returned is as good as a GET: a
        # follower goes from one token to waiting for the next without a request.
        fresh, self._fresh_at = self._fresh_at, None
        recent = fresh is not None and self._clock.monotonic() - fresh < _FRESH
        if recent and self._observed is not None:
            return self._observed
        secret = await self._kube.get_secret(self.secret)
        return self._observe(secret)

    def _observe(self, secret: dict[str, Any]) -> Observation:
        version = str(secret.get("metadata", {}).get("resourceVersion", ""))
        previous = self._observed
        if previous is not None and previous.resource_version == version:
            return previous  # the same write: its claim is still counted from then
        record = decode(secret.get("data"))
        if record is not None:
            redactor.add(record.refresh_token)
            redactor.add(record.access_token)
        self._observed = Observation(record, version, self._clock.monotonic())
        return self._observed

    async def _write(self, observed: Observation, record: FamilyRecord) -> Observation:
        secret = await self._kube.patch_secret(
            self.secret,
            resource_version=observed.resource_version,
            data={FAMILY_KEY: encode(record)},
        )
        return self._observe(secret)

    def _read_bootstrap(self) -> str | None:
        if self._bootstrap is None:
            return None
        try:
            value = self._bootstrap.read()
        except CredentialError:
            return None
        redactor.add(value)
        return value

    def _adopt(self, record: FamilyRecord) -> Token:
        assert record.access_token is not None
        assert record.received_at is not None
        assert record.lifetime is not None
        now_mono, now_wall = self._clock.monotonic(), self._clock.time()
        self._have_expiry = record.received_at + record.lifetime
        return Token(
            access_token=record.access_token,
            token_type=record.token_type,
            lifetime=record.lifetime,
            lifetime_source="family",
            received_mono=now_mono - (now_wall - record.received_at),
            received_wall=record.received_at,
            scope=record.scope,
        )

    async def _wait(self, observed: Observation, until_mono: float) -> None:
        """Until the Secret changes, or the holder's claim runs out, or our token
        would expire while we wait (then the refresher must learn it failed)."""
        now_mono, now_wall = self._clock.monotonic(), self._clock.time()
        limit = until_mono - now_mono
        if self._have_expiry is not None:
            left = self._have_expiry - now_wall
            if left <= 0:
                holder = observed.record.holder if observed.record else None
                raise CoordinationError(
                    f"waiting for {holder}, which holds the token family in secret "
                    f"{self._kube.namespace}/{self.secret}, to refresh it; our token expired",
                    error="waiting_for_holder",
                )
            limit = min(limit, left)
        limit = min(limit, _MAX_WATCH)
        if limit <= 0:
            return
        started = self._clock.monotonic()
        changed = await self._kube.watch_secret(
            self.secret, resource_version=observed.resource_version, seconds=limit
        )
        now = self._clock.monotonic()
        if changed is not None:
            self._observe(changed)
            self._fresh_at = now
        elif now >= started + limit - 0.05:
            # Watched to the end with no change: what we have is current, no GET needed.
            self._fresh_at = now
        elif now < until_mono - 1:
            # The watch ended early (an apiserver restart, a too old resourceVersion):
            # read the Secret again, a little later.
            await self._clock.sleep(0.2)

    async def _present(
        self, observed: Observation, claimed: FamilyRecord, present: Present
    ) -> Token:
        # Once the refresh token is on its way, a stop (SIGTERM in a rollout) must not cut
        # this short: the IdP may rotate it, and only our write tells the next holder.
        # The work runs on, shielded, for as long as one request and a few writes take.
        work = asyncio.ensure_future(self._present_and_store(observed, claimed, present))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            grace = self._settings.timeout + _STOP_GRACE
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(work), grace)
            raise

    async def _present_and_store(
        self, observed: Observation, claimed: FamilyRecord, present: Present
    ) -> Token:
        assert claimed.refresh_token is not None
        try:
            token = await present(claimed.refresh_token)
        except TokenEndpointError as exc:
            if exc.error == "invalid_grant":
                await self._mark_rejected(observed, claimed)
            raise
        rotated = token.refresh_token is not None and token.refresh_token != claimed.refresh_token
        now = self._clock.time()
        s = self._settings
        result = replace(
            claimed,
            refresh_token=token.refresh_token or claimed.refresh_token,
            access_token=token.access_token,
            token_type=token.token_type,
            scope=token.scope,
            received_at=token.received_wall,
            lifetime=token.lifetime,
            claim_seconds=claim_seconds(
                token.lifetime, ratio=s.refresh_ratio, jitter=s.jitter, lease=s.family_lease
            ),
            presenting=None,
            rotated_at=now if rotated else claimed.rotated_at,
            rotated_by=self.identity if rotated else claimed.rotated_by,
            rotations=claimed.rotations + (1 if rotated else 0),
            rejected=False,
        )
        self._pending = _Pending(result, observed.resource_version)
        await self._flush_pending(retry_for=min(s.family_lease, _STOP_GRACE))
        self._have_expiry = token.expires_wall
        return token

    async def _flush_pending(self, *, retry_for: float = 0.0) -> None:
        """Write the result we hold; on a conflict, someone took the family from us."""
        pending = self._pending
        assert pending is not None
        deadline = self._clock.monotonic() + retry_for
        while True:
            try:
                claim = Observation(None, pending.resource_version, 0.0)  # our claim's write
                await self._write(claim, pending.record)
                self._pending = None
                return
            except Conflict:
                self._pending = None
                log.error(
                    "another pod changed the token family while this pod was presenting its "
                    "refresh token (our claim ran out, or a person re-seeded it); the refresh "
                    "token the identity provider just issued to us is dropped",
                    extra={"secret": self.secret},
                )
                return
            except CoordinationError as exc:
                if self._clock.monotonic() >= deadline:
                    log.error(
                        f"cannot store the rotated refresh token in the family Secret yet: "
                        f"{exc}; holding it in memory and trying again",
                        extra={"secret": self.secret},
                    )
                    return
                await self._clock.sleep(_WRITE_RETRY)

    async def _mark_rejected(self, observed: Observation, claimed: FamilyRecord) -> None:
        try:
            await self._write(
                observed, replace(claimed, rejected=True, refresh_token=None, presenting=None)
            )
        except (Conflict, CoordinationError) as exc:
            log.warning(f"could not mark the rejected token family in its Secret: {exc}")
