"""Who sent a failure report: the TokenReview of the sidecar's token, cached.

`TokenReviewer` asks the kube-apiserver (through `kubeapi`) whose token a report carries,
and remembers the answer until the token expires, so a burst of reports costs one review,
not a hundred; concurrent reports with one token share one review. `ReviewCache` is the
pure part: entries by token digest (the token itself is never kept), timed by the JWT
`exp`, with time passed in. What the answer means is `checks.check_identity`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from token_refresher.expiry import jwt_claims

from .checks import TokenReviewStatus
from .kubeapi import KubeApi, KubeApiError
from .metrics import OperatorMetrics

__all__ = ["ReviewCache", "TokenReviewer", "token_digest", "token_expiry"]


def token_digest(token: str) -> str:
    """The cache key of a token: never keep the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_expiry(token: str) -> float | None:
    """The JWT `exp` (seconds since the epoch), read without verifying the signature.

    Only used to time the cache entry: the signature is the apiserver's business.
    """
    claims = jwt_claims(token)
    exp = claims.get("exp") if claims else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


@dataclass(frozen=True)
class _Entry:
    status: TokenReviewStatus
    until: float  # monotonic


@dataclass(kw_only=True)
class ReviewCache:
    """Review results by token digest, kept until the token's `exp` (at most `max_ttl`).

    Rejections are kept briefly too (`negative_ttl`), so a sidecar stuck with a bad token
    costs one review every half minute, not one per retry. Time is passed in: pure.
    """

    max_ttl: float = 600.0
    negative_ttl: float = 30.0
    max_entries: int = 10_000
    _entries: dict[str, _Entry] = field(default_factory=dict, init=False, repr=False)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str, *, now: float) -> TokenReviewStatus | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if now >= entry.until:
            del self._entries[digest]
            return None
        return entry.status

    def put(
        self,
        digest: str,
        status: TokenReviewStatus,
        *,
        now: float,
        wall_now: float,
        expires_at: float | None,
    ) -> None:
        if status.get("authenticated"):
            ttl = self.max_ttl if expires_at is None else min(self.max_ttl, expires_at - wall_now)
        else:
            ttl = self.negative_ttl
        if ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._evict(now)
        self._entries[digest] = _Entry(status, now + ttl)

    def _evict(self, now: float) -> None:
        for digest in [d for d, e in self._entries.items() if now >= e.until]:
            del self._entries[digest]
        while len(self._entries) >= self.max_entries:  # still full: drop the oldest
            del self._entries[next(iter(self._entries))]


class TokenReviewer:
    """Asks the kube-apiserver who a bearer token is, with a cache and a concurrency cap."""

    def __init__(
        self,
        *,
        api: KubeApi,
        audience: str,
        cache: ReviewCache | None = None,
        max_concurrency: int = 8,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.api = api
        self.metrics = metrics if metrics is not None else OperatorMetrics()
        self.audience = audience
        self.cache = cache if cache is not None else ReviewCache()
        self._limit = asyncio.Semaphore(max_concurrency)
        self._clock = clock
        self._wallclock = wallclock
        # One review per token at a time: a burst of reports with the same token waits for
        # the first review instead of sending its own. The review runs in a task of its
        # own, so a caller that goes away does not cancel it for the others.
        self._inflight: dict[str, asyncio.Task[TokenReviewStatus]] = {}

    async def review(self, token: str) -> TokenReviewStatus:
        """The status of a TokenReview of `token` for our audience (cached).

        Raises KubeApiError when the API could not answer.
        """
        digest = token_digest(token)
        cached = self.cache.get(digest, now=self._clock())
        if cached is not None:
            self.metrics.token_review_cache_hits.inc()
            return cached
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.create_task(self._review(token, digest))
            self._inflight[digest] = task
            task.add_done_callback(lambda t: self._done(digest, t))
        return await asyncio.shield(task)

    def _done(self, digest: str, task: asyncio.Task[TokenReviewStatus]) -> None:
        self._inflight.pop(digest, None)
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have gone

    async def _review(self, token: str, digest: str) -> TokenReviewStatus:
        status = await self._ask(token)
        self.cache.put(
            digest,
            status,
            now=self._clock(),
            wall_now=self._wallclock(),
            expires_at=token_expiry(token),
        )
        return status

    async def _ask(self, token: str) -> TokenReviewStatus:
        async with self._limit:
            try:
                review = await self.api.review_token(token, audience=self.audience)
            except KubeApiError:
                self.metrics.token_reviews.labels("error").inc()
                raise
        verdict = "authenticated" if review.get("authenticated") else "unauthenticated"
        self.metrics.token_reviews.labels(verdict).inc()
        return review
