"""Who the token is: the JWT expiry read, the review cache, the TokenReviewer over the API."""

from __future__ import annotations

import asyncio
import base64
import json
from types import SimpleNamespace
from typing import Any

import pytest

from tests.operator.test_checks import AUD, review
from token_refresher_operator.checks import TokenReviewStatus
from token_refresher_operator.kubeapi import KubeApi, KubeApiError
from token_refresher_operator.reviews import ReviewCache, TokenReviewer, token_digest, token_expiry


def jwt(claims: Any) -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(b'{"alg":"RS256"}')
    return f"{header}.{part(json.dumps(claims).encode())}.{part(b'sig')}"


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (jwt({"exp": 1795314459}), 1795314459.0),
        (jwt({"exp": 1795314459.5}), 1795314459.5),
        (jwt({"sub": "x"}), None),
        (jwt({"exp": "soon"}), None),
        (jwt({"exp": True}), None),
        (jwt([1, 2]), None),
        ("opaque-token", None),
        ("a.b", None),
        ("a.!!!.c", None),
        ("a.bm90IGpzb24.c", None),
    ],
)
def test_token_expiry_is_read_without_verifying(token: str, expected: float | None) -> None:
    assert token_expiry(token) == expected


def test_the_cache_key_is_a_digest_not_the_token() -> None:
    digest = token_digest("secret-token")
    assert len(digest) == 64
    assert "secret" not in digest


def test_the_cache_keeps_accepted_reviews_until_the_token_expires() -> None:
    cache = ReviewCache(max_ttl=600, negative_ttl=30)
    cache.put("t", review(), now=0.0, wall_now=1000.0, expires_at=1120.0)
    assert cache.get("t", now=119.0) == review()
    assert cache.get("t", now=120.0) is None
    assert len(cache) == 0


def test_the_cache_caps_the_lifetime() -> None:
    cache = ReviewCache(max_ttl=600)
    cache.put("t", review(), now=0.0, wall_now=0.0, expires_at=86400.0)
    assert cache.get("t", now=599.0) is not None
    assert cache.get("t", now=600.0) is None
    cache.put("u", review(), now=0.0, wall_now=0.0, expires_at=None)
    assert cache.get("u", now=599.0) is not None


def test_the_cache_keeps_rejections_briefly_and_expired_tokens_never() -> None:
    cache = ReviewCache(max_ttl=600, negative_ttl=30)
    cache.put("bad", review(authenticated=False), now=0.0, wall_now=0.0, expires_at=9999.0)
    assert cache.get("bad", now=29.0) is not None
    assert cache.get("bad", now=30.0) is None
    cache.put("old", review(), now=0.0, wall_now=100.0, expires_at=50.0)
    assert cache.get("old", now=0.0) is None


def test_the_cache_is_bounded() -> None:
    cache = ReviewCache(max_entries=3)
    for i in range(10):
        cache.put(str(i), review(), now=float(i), wall_now=0.0, expires_at=None)
    assert len(cache) == 3
    assert cache.get("9", now=10.0) is not None


class FakeAuthApi:
    """Stands in for AuthenticationV1Api (`KubeApi.authentication`): faults, call counts."""

    def __init__(self, status: TokenReviewStatus | None = None, fail: Exception | None = None):
        self.status = status if status is not None else review()
        self.fail = fail
        self.calls: list[dict[str, Any]] = []

    def create_token_review(self, body: dict[str, Any], **kwargs: Any) -> Any:
        self.calls.append(body)
        if self.fail is not None:
            raise self.fail
        return SimpleNamespace(data=json.dumps({**body, "status": self.status}).encode())


def reviewer(api: FakeAuthApi, **kwargs: Any) -> TokenReviewer:
    kube = KubeApi(None)
    kube.authentication = api
    return TokenReviewer(api=kube, audience=AUD, **kwargs)


async def test_the_reviewer_asks_for_our_audience_and_caches() -> None:
    api = FakeAuthApi()
    r = reviewer(api, clock=lambda: 0.0, wallclock=lambda: 0.0)
    token = jwt({"exp": 300})
    assert await r.review(token) == review()
    assert await r.review(token) == review()
    assert len(api.calls) == 1
    assert api.calls[0]["spec"] == {"token": token, "audiences": [AUD]}
    assert api.calls[0]["kind"] == "TokenReview"


async def test_concurrent_reviews_of_one_token_make_one_call() -> None:
    api = FakeAuthApi()
    r = reviewer(api)
    results = await asyncio.gather(*(r.review("same-token") for _ in range(50)))
    assert results == [review()] * 50
    assert len(api.calls) == 1


class Unreachable(Exception):
    status = 500


async def test_api_failures_are_reported_without_the_token() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    api = FakeAuthApi(fail=Unreachable(f"request {token} failed"))
    r = reviewer(api)
    with pytest.raises(KubeApiError) as info:
        await r.review(token)
    assert info.value.lines == ["TokenReview failed: Unreachable (HTTP 500)"]
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    api.fail = None  # failures are not cached
    assert await r.review(token) == review()


async def test_a_caller_going_away_does_not_cancel_the_review_for_others() -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()  # the one API call is under way: both callers wait on it

    class SlowApi(FakeAuthApi):
        def create_token_review(self, body: dict[str, Any], **kwargs: Any) -> Any:
            loop.call_soon_threadsafe(entered.set)
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()
            return super().create_token_review(body, **kwargs)

    loop = asyncio.get_running_loop()
    api = SlowApi()
    r = reviewer(api)
    first = asyncio.create_task(r.review("tok"))
    second = asyncio.create_task(r.review("tok"))
    await entered.wait()
    first.cancel()
    gate.set()
    assert await second == review()
    assert len(api.calls) == 1


async def test_reviews_and_cache_hits_are_counted_for_prometheus() -> None:
    r = reviewer(FakeAuthApi(), clock=lambda: 0.0, wallclock=lambda: 0.0)
    token = jwt({"exp": 300})
    await r.review(token)
    await r.review(token)
    failing = reviewer(FakeAuthApi(fail=RuntimeError("down")), metrics=r.metrics)
    with pytest.raises(KubeApiError):
        await failing.review(jwt({"exp": 301}))
    value = r.metrics.registry.get_sample_value
    reviews = "token_refresher_operator_token_reviews_total"
    assert value(reviews, {"result": "authenticated"}) == 1
    assert value(reviews, {"result": "error"}) == 1
    assert value("token_refresher_operator_token_review_cache_hits_total") == 1
