"""One sidecar, several tokens (issue 17): each token refreshed on its own schedule, one
token's failing IdP never delaying another, and the endpoints, metrics, logs and reports
naming the token they are about.

Time is simulated: every loop sleeps on one `SteppedClock`, which the test moves to the
earliest deadline once every loop is asleep, so the order of events is the one real
time would give, without waiting for it.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fakes import FakeIdP, SteppedClock, spin_until
from token_refresher import Refreshers, Reporter, Settings, StatusServer
from token_refresher.report import Report

A_URL = "https://idp-a.example/token"  # the default token and "payments"
B_URL = "https://idp-b.example/token"  # "partner", another IdP
START = 1000.0


@dataclass
class Pod:
    refreshers: Refreshers
    server: StatusServer
    a: FakeIdP
    b: FakeIdP
    clock: SteppedClock
    operator: list[dict[str, Any]]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def run_until(self, seconds: float) -> None:
        """Run every loop (and the reporter) until `seconds` after the start."""
        if not self.tasks:
            assert self.refreshers.reporter is not None
            self.tasks = [
                asyncio.create_task(self.refreshers.run()),
                asyncio.create_task(self.refreshers.reporter.run()),
            ]
        await self.clock.run_until(START + seconds, sleepers=len(self.refreshers.refreshers))

    async def stop(self) -> None:
        self.refreshers.stop()
        for task in self.tasks[1:]:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def posts(self, idp: FakeIdP, audience: str | None = None) -> list[float]:
        """When `idp` was asked for a token (for `audience`, if given)."""
        return [
            round(s.at - START, 6)
            for s in idp.posts
            if audience is None or s.form.get("audience") == audience
        ]

    def get(self, path: str) -> tuple[int, str]:
        status, _ctype, body = self.server.respond("GET", path)
        return status, body.decode()


def settings_for(tmp_path: Path, **extra: str) -> Settings:
    (tmp_path / "out").mkdir(parents=True, exist_ok=True)
    (tmp_path / "a-secret").write_text("SECRET-CANARY-a-secret")
    (tmp_path / "b-secret").write_text("SECRET-CANARY-b-secret")
    (tmp_path / "report-token").write_text("SECRET-CANARY-report-token")
    tokens = {
        "payments": {"audience": "payments-api", "refresh_ratio": 0.5},
        "partner": {
            "token_url": B_URL,
            "client_id": "partner-client",
            "client_secret_file": str(tmp_path / "b-secret"),
        },
    }
    env = {
        "TOKEN_URL": A_URL,
        "CLIENT_ID": "billing",
        "CLIENT_SECRET_FILE": str(tmp_path / "a-secret"),
        "AUDIENCE": "invoices-api",
        "OUTPUT": str(tmp_path / "out" / "token"),
        "LISTEN": "127.0.0.1:0",
        "REPORT_URL": "https://operator.example/report",
        "REPORT_TOKEN_FILE": str(tmp_path / "report-token"),
        "POD_NAMESPACE": "shop",
        "POD_NAME": "billing-1",
        "POD_UID": "uid-1",
        "TOKENS": json.dumps(tokens),
        **extra,
    }
    return Settings.from_env({f"TOKEN_REFRESHER_{k}": v for k, v in env.items()})


@asynccontextmanager
async def running_pod(tmp_path: Path, half: Callable[[], float]) -> AsyncIterator[Pod]:
    clock = SteppedClock(mono=START)
    a, b = FakeIdP(clock), FakeIdP(clock)
    a.expires_in, b.expires_in = 100, 60
    received: list[dict[str, Any]] = []

    def route(request: httpx2.Request) -> httpx2.Response:
        if request.url.host == "operator.example":
            received.append(json.loads(request.content))
            return httpx2.Response(202)
        return (a if request.url.host == "idp-a.example" else b).handler(request)

    transport = httpx2.MockTransport(route)
    settings = settings_for(tmp_path)
    reporter = Reporter(settings, transport=transport, clock=clock, random=half)
    refreshers = Refreshers(
        settings, transport=transport, clock=clock, random=half, reporter=reporter
    )
    server = StatusServer(refreshers, "127.0.0.1", 0)
    pod = Pod(refreshers, server, a, b, clock, received)
    async with refreshers:
        try:
            yield pod
        finally:
            await pod.stop()
    await reporter.aclose()


@pytest.fixture
async def pod(tmp_path: Path, half: Callable[[], float]) -> AsyncIterator[Pod]:
    async with running_pod(tmp_path, half) as pod:
        yield pod


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in itertools.pairwise(times)]


def fail_forever(idp: FakeIdP, since: float) -> None:
    """From `since` seconds after the start on, `idp` answers 503."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        if idp.clock.mono - START >= since:
            return idp.error(503, "temporarily_unavailable")
        return idp.token()

    idp.reply(*[answer] * 10_000)


async def test_every_token_is_written_to_its_own_file(pod: Pod) -> None:
    await pod.run_until(1)
    tokens = pod.refreshers.refreshers
    outputs = {name: r.settings.output for name, r in tokens.items()}
    assert [p.name for p in outputs.values()] == ["token", "payments", "partner"]
    contents = {name: path.read_text() for name, path in outputs.items()}
    assert contents["default"] != contents["payments"]  # two tokens from IdP A
    assert all(c.startswith("SECRET-CANARY-access-") for c in contents.values())
    # Each asked its own IdP, with its own credentials and audience.
    assert pod.posts(pod.a, "invoices-api") == [0.0]
    assert pod.posts(pod.a, "payments-api") == [0.0]
    assert pod.posts(pod.b) == [0.0]
    assert pod.b.posts[0].form.get("audience") == "invoices-api"  # inherited, not a credential
    auth = pod.b.posts[0].headers["authorization"]
    assert auth.startswith("Basic ")
    assert base64.b64decode(auth[6:]).decode() == "partner-client:SECRET-CANARY-b-secret"


async def test_each_token_is_refreshed_on_its_own_schedule(pod: Pod) -> None:
    await pod.run_until(400)
    # random() draws the middle of each window; after the first token's start-up window,
    # every REFRESH_RATIO of the lifetime (a lifetime counted from the request and cut to
    # the whole second, so a little under expires_in).
    invoices, payments, partner = (
        pod.posts(pod.a, "invoices-api"),
        pod.posts(pod.a, "payments-api"),
        pod.posts(pod.b),
    )
    assert all(69 <= gap <= 70 for gap in gaps(invoices)[1:])  # 0.7 of 100 s
    assert all(49 <= gap <= 50 for gap in gaps(payments)[1:])  # 0.5 of 100 s
    assert all(41 <= gap <= 42 for gap in gaps(partner)[1:])  # 0.7 of 60 s
    assert (len(invoices), len(payments), len(partner)) == (6, 9, 10)


async def test_a_failing_idp_never_delays_another_token(tmp_path: Path, half) -> None:
    async with running_pod(tmp_path / "healthy", half) as healthy:
        await healthy.run_until(400)
    async with running_pod(tmp_path / "failing", half) as pod:
        fail_forever(pod.b, since=100)
        await pod.run_until(400)
        # The tokens of IdP A are asked for exactly when they are with B healthy.
        for audience in ("invoices-api", "payments-api"):
            assert pod.posts(pod.a, audience) == healthy.posts(healthy.a, audience)
        tokens = pod.refreshers.refreshers
        assert (tokens["default"].state, tokens["payments"].state) == ("ready", "ready")
        # partner's last token expired; it is retried with backoff (full jitter drawn
        # at the middle: 0.5, 1, 2, ... s), capped at BACKOFF_MAX: never more often
        # because the other tokens refresh.
        partner = tokens["partner"]
        assert partner.state == "expired"
        assert not partner.settings.output.exists()
        failed = [t for t in pod.posts(pod.b) if t >= 100]
        assert gaps(failed)[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]
        assert max(gaps(failed)) <= 30.0


async def test_readyz_names_the_tokens_without_a_valid_file(pod: Pod) -> None:
    assert pod.get("/readyz") == (
        503,
        "no valid token: default (starting), payments (starting), partner (starting)\n",
    )
    fail_forever(pod.b, since=100)
    await pod.run_until(120)
    # partner's token is failing to refresh but still valid: ready.
    assert pod.refreshers.refreshers["partner"].state == "retrying"
    assert pod.get("/readyz") == (200, "ok\n")
    await pod.run_until(140)
    assert pod.get("/readyz") == (503, "no valid token: partner (expired)\n")


async def test_healthz_needs_every_loop(pod: Pod) -> None:
    assert pod.get("/healthz") == (503, "refresh loop stopped: default, payments, partner\n")


async def test_status_keeps_the_default_document_and_lists_every_token(pod: Pod) -> None:
    fail_forever(pod.b, since=100)
    await pod.run_until(140)
    status, body = pod.get("/status")
    assert status == 200
    document = json.loads(body)
    tokens = document.pop("tokens")
    assert list(tokens) == ["default", "payments", "partner"]
    assert document == tokens["default"]
    assert document["output"].endswith("/out/token")
    assert tokens["payments"]["output"].endswith("/out/payments")
    assert tokens["partner"]["state"] == "expired"
    assert tokens["partner"]["token_endpoint"] == B_URL
    assert tokens["partner"]["last_error"]["error"] == "temporarily_unavailable"
    assert tokens["default"]["state"] == "ready"
    assert "SECRET-CANARY" not in body


async def test_every_token_series_carries_the_token_label(pod: Pod) -> None:
    fail_forever(pod.b, since=100)
    await pod.run_until(140)
    status, text = pod.get("/metrics")
    assert status == 200
    attempts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert sample.labels.get("token") in {"default", "payments", "partner"}, sample
            if sample.name == "token_refresher_refresh_total":
                attempts[sample.labels["token"], sample.labels["outcome"]] = sample.value
    assert attempts["default", "transient_error"] == 0
    assert attempts["payments", "transient_error"] == 0
    assert attempts["partner", "transient_error"] > 5
    assert attempts["default", "success"] == len(pod.posts(pod.a, "invoices-api"))
    assert attempts["partner", "success"] == len([t for t in pod.posts(pod.b) if t < 100])
    expiry = 'token_refresher_token_expiry_timestamp_seconds{token="partner"} 0.0'
    assert expiry in text


async def test_reports_name_their_token_and_the_default_ones_read_as_before(pod: Pod) -> None:
    fail_forever(pod.b, since=100)
    fail_forever(pod.a, since=300)
    await pod.run_until(350)
    by_token: dict[str, list[tuple[str, Any]]] = {}
    for body in pod.operator:
        by_token.setdefault(body.get("token", "default"), []).append((body["state"], body["error"]))
    assert by_token["partner"][0] == ("failing", "temporarily_unavailable")
    assert ("expired", "temporarily_unavailable") in by_token["partner"]
    assert by_token["default"][0] == ("failing", "temporarily_unavailable")
    assert by_token["payments"][0] == ("failing", "temporarily_unavailable")
    # The default token's body has no "token" field: the body operators always accepted.
    default_bodies = [body for body in pod.operator if "token" not in body]
    assert default_bodies
    assert all(
        body.get("token") in {"payments", "partner"} for body in pod.operator if "token" in body
    )


async def test_one_tokens_report_never_replaces_anothers(tmp_path: Path, half) -> None:
    clock = SteppedClock()
    sent: list[dict[str, Any]] = []

    def operator(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        return httpx2.Response(202)

    reporter = Reporter(
        settings_for(tmp_path), transport=httpx2.MockTransport(operator), clock=clock, random=half
    )
    partner = reporter.for_token("partner")
    reporter.failure("invalid_client", "bad", 1, 1_800_000_000)
    partner.failure("http_503", None, 1, 1_800_000_000)
    partner.expired("http_503", None, 4, 1_800_000_000)  # replaces partner's unsent one
    task = asyncio.create_task(reporter.run())
    await spin_until(lambda: len(sent) == 2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await reporter.aclose()
    assert [(b.get("token"), b["state"], b["error"]) for b in sent] == [
        (None, "failing", "invalid_client"),
        ("partner", "expired", "http_503"),
    ]
    # Aggregation is per token: partner's failures do not count against the default's.
    assert reporter.policy.last is not None
    assert reporter.policy.last.error == "invalid_client"
    assert partner.policy.last is not None
    assert partner.policy.last.state == "expired"


async def test_log_lines_name_their_token(pod: Pod, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="token_refresher")
    fail_forever(pod.b, since=0)
    await pod.run_until(5)
    refreshed = {r.token for r in caplog.records if r.getMessage() == "token refreshed"}  # type: ignore[attr-defined]
    assert refreshed == {"default", "payments"}
    failures = [r for r in caplog.records if "temporarily_unavailable" in r.getMessage()]
    assert failures
    assert {r.token for r in failures} == {"partner"}  # type: ignore[attr-defined]


async def test_once_fetches_every_token_side_by_side(pod: Pod) -> None:
    fail_forever(pod.b, since=0)
    assert await pod.refreshers.once() == {"default": True, "payments": True, "partner": False}
    pod.b.script.clear()
    assert await pod.refreshers.once() == {"default": True, "payments": True, "partner": True}


async def test_tokens_of_one_ca_bundle_share_one_client(pod: Pod) -> None:
    clients = {id(r._client) for r in pod.refreshers.refreshers.values()}
    assert len(clients) == 1
    registries = {id(r.metrics.registry) for r in pod.refreshers.refreshers.values()}
    assert len(registries) == 1


async def test_a_token_with_its_own_ca_bundle_gets_its_own_client(tmp_path: Path) -> None:
    bundle = Path(ssl.get_default_verify_paths().openssl_cafile)
    if not bundle.exists():  # noqa: ASYNC240 (a test's set-up)
        pytest.skip(f"no CA bundle at {bundle}")
    tokens = {"payments": {}, "partner": {"ca_file": str(bundle), "timeout": "30"}}
    settings = settings_for(tmp_path, TOKENS=json.dumps(tokens))
    async with Refreshers(settings) as refreshers:
        clients = {name: id(r._client) for name, r in refreshers.refreshers.items()}
    assert clients["default"] == clients["payments"] != clients["partner"]


async def test_the_operator_reads_the_token_of_every_report(tmp_path: Path) -> None:
    # The seam of docs/CONTRACTS.md "Failure reports": what this side sends, the
    # operator's own parser reads (tests/test_contracts.py does so for the default token).
    from token_refresher_operator.report import parse_report

    reporter = Reporter(settings_for(tmp_path))
    try:
        for token, expected in (("default", None), ("payments", "payments")):
            report = Report("failing", "http_503", None, 1, 1_800_000_000, token)
            parsed = parse_report(json.dumps(reporter.body(report)).encode())
            assert (parsed.token, parsed.state) == (expected, "failing")
    finally:
        await reporter.aclose()
