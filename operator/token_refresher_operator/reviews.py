"""Who sent a failure report: TokenReview of the sidecar's pod-bound token, and the verdict.

A report may only speak about the pod whose token carries it (DESIGN, "Security stance").
The kube-apiserver tells us whose token it is: a TokenReview of a projected token bound to
a pod returns the service account as the username and the pod's name and uid in
`user.extra`. `check_identity` compares that with what the report claims, as a pure
function; `TokenReviewer` is the thin shell that asks the API (in a thread: the kubernetes
client is synchronous) and remembers answers until the token expires, so a burst of
reports costs one review, not a hundred.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

from .errors import OperatorError
from .metrics import OperatorMetrics

__all__ = [
    "POD_NAME_EXTRA",
    "POD_UID_EXTRA",
    "Accept",
    "Decision",
    "Reject",
    "ReviewCache",
    "ReviewUnavailable",
    "TokenReviewStatus",
    "TokenReviewer",
    "UserInfo",
    "check_identity",
    "token_digest",
    "token_expiry",
]

logger = logging.getLogger(__name__)

POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
_SA_PREFIX = "system:serviceaccount:"


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]


class TokenReviewStatus(TypedDict, total=False):
    """`status` of an authentication.k8s.io/v1 TokenReview, as the API returns it."""

    authenticated: bool
    user: UserInfo
    audiences: list[str]
    error: str


class ReportIdentity(Protocol):
    """The part of a report that names the pod it is about."""

    @property
    def namespace(self) -> str: ...
    @property
    def pod(self) -> str: ...
    @property
    def uid(self) -> str: ...


@dataclass(frozen=True)
class Accept:
    """The token belongs to the pod the report is about, running as `service_account`."""

    service_account: str


@dataclass(frozen=True)
class Reject:
    """Refuse the report: HTTP `status`, a short `reason` code (metrics) and a sentence."""

    status: int
    reason: str
    message: str


Decision = Accept | Reject


class ReviewUnavailable(OperatorError):
    """The TokenReview could not be made (API unreachable, forbidden, 5xx): answer 503."""


def check_identity(*, review: TokenReviewStatus, report: ReportIdentity, audience: str) -> Decision:
    """Accept only a token of a service account of the report's namespace, bound to the
    report's pod (name and uid), issued for `audience`."""
    if not review.get("authenticated"):
        return Reject(401, "invalid_token", "the bearer token is not valid")
    if audience not in review.get("audiences", []):
        # The apiserver checks spec.audiences itself; an empty list back means an
        # authenticator that ignores audiences, which must not pass for ours.
        return Reject(401, "wrong_audience", f"the bearer token is not for audience {audience}")
    user = review.get("user", {})
    username = user.get("username", "")
    if not username.startswith(_SA_PREFIX) or username.count(":") != 3:
        return Reject(403, "not_service_account", "the token is not a service-account token")
    namespace, _, service_account = username[len(_SA_PREFIX) :].partition(":")
    if namespace != report.namespace:
        return Reject(403, "wrong_namespace", f"the token is not of namespace {report.namespace}")
    extra = user.get("extra", {})
    pod_names = extra.get(POD_NAME_EXTRA, [])
    pod_uids = extra.get(POD_UID_EXTRA, [])
    if not pod_names or not pod_uids:
        return Reject(403, "not_pod_bound", "the token is not bound to a pod")
    if pod_names != [report.pod]:
        return Reject(403, "wrong_pod", f"the token is not of pod {report.pod}")
    if pod_uids != [report.uid]:
        return Reject(403, "wrong_uid", f"the token is not of pod {report.pod} uid {report.uid}")
    return Accept(service_account=service_account)


def token_digest(token: str) -> str:
    """The cache key of a token: never keep the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_expiry(token: str) -> float | None:
    """The JWT `exp` (seconds since the epoch), read without verifying the signature.

    Only used to time the cache entry: the signature is the apiserver's business.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


@dataclass(frozen=True)
class _Entry:
    status: TokenReviewStatus
    until: float  # monotonic


class ReviewCache:
    """Review results by token digest, kept until the token's `exp` (at most `max_ttl`).

    Rejections are kept briefly too (`negative_ttl`), so a sidecar stuck with a bad token
    costs one review every half minute, not one per retry. Time is passed in: pure.
    """

    def __init__(
        self, *, max_ttl: float = 600.0, negative_ttl: float = 30.0, max_entries: int = 10_000
    ) -> None:
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}

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
        api_client: Any,
        audience: str,
        cache: ReviewCache | None = None,
        max_concurrency: int = 8,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        from kubernetes import client

        self._api: Any = client.AuthenticationV1Api(api_client)
        self.metrics = metrics if metrics is not None else OperatorMetrics()
        self.audience = audience
        self.cache = cache if cache is not None else ReviewCache()
        self._limit = asyncio.Semaphore(max_concurrency)
        self._timeout = timeout
        self._clock = clock
        self._wallclock = wallclock
        # One review per token at a time: a burst of reports with the same token waits for
        # the first review instead of sending its own. The review runs in a task of its
        # own, so a caller that goes away does not cancel it for the others.
        self._inflight: dict[str, asyncio.Task[TokenReviewStatus]] = {}

    async def review(self, token: str) -> TokenReviewStatus:
        """The status of a TokenReview of `token` for our audience (cached).

        Raises ReviewUnavailable when the API could not answer.
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
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self.audience]},
        }
        async with self._limit:
            try:
                raw = await asyncio.to_thread(self._create, body)
            except Exception as exc:
                self.metrics.token_reviews.labels("error").inc()
                # Name the failure by class and HTTP status only: the request body holds
                # the token, and some client errors echo the request.
                status = getattr(exc, "status", None)
                detail = f" (HTTP {status})" if status else ""
                problem = f"TokenReview failed: {type(exc).__name__}{detail}"
                raise ReviewUnavailable([problem]) from None
        result = raw.get("status") if isinstance(raw, dict) else None
        review: TokenReviewStatus = result if isinstance(result, dict) else {}  # type: ignore[assignment]
        verdict = "authenticated" if review.get("authenticated") else "unauthenticated"
        self.metrics.token_reviews.labels(verdict).inc()
        return review

    def _create(self, body: dict[str, Any]) -> Any:
        # _preload_content=False: the raw JSON, as the API sent it, in every client version.
        resp = self._api.create_token_review(
            body, _preload_content=False, _request_timeout=self._timeout
        )
        return json.loads(resp.data)
