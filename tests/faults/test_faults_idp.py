"""IdP faults, end to end: the real sidecar process, the real oidc-provider, and a fault
proxy between them that turns into each way a token endpoint can fail.

Every case runs the same story. The sidecar gets a good token through the proxy; the
proxy turns faulty just before the first refresh; for a while every refresh meets the
fault; then the proxy passes through again. Meanwhile an app stand-in reads the token
file all the time. Each case names what must happen, and checks it from the outside
(/status, /readyz, /metrics, the token file, the reports, the proxy's request log):

- backoff:     retried with capped exponential backoff (several attempts in the window)
- retry-after: the server's Retry-After is honoured (attempts exactly that far apart)
- permanent:   only a person can fix it: retried slowly (up to PERMANENT_ERROR_INTERVAL)

and in every case: the last good token stays on disk and readable (the app never sees
an empty, partial or expired file), /readyz stays 200, the failure is reported with its
error class, no credential or rejected token leaks, and the first success afterwards is
reported as recovered. The unit-level fault tests (MockTransport, fake clock) are in
tests/sidecar/test_sidecar_faults.py; this is the same promise through real sockets.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import pytest

from tests.faults.harness import TokenReader, wait_until
from tests.support.faultproxy import Fault

pytestmark = [pytest.mark.idp, pytest.mark.slow]

# Seconds; client_credentials tokens of the shared oidc-provider. Long beside the 2.2 s
# window of faults, so that a loaded machine still sees the whole window, and recovery,
# within the token's life (the app's reads would show an expired token otherwise).
TTL = 15
CANARY = "SECRET-CANARY-fault-token"
TIMEOUT = 0.5
BACKOFF_MAX = 0.3
PERMANENT = 3.0  # PERMANENT_ERROR_INTERVAL, the ceiling: the first retry after 2.7..3 s
WINDOW = 2.2  # seconds of faulty answers after the first faulty attempt

SETTINGS = {
    "REFRESH_RATIO": 0.05,  # first refresh 0.75 s after the token arrived
    "JITTER": 0,
    "MIN_REFRESH_INTERVAL": 0,
    "TIMEOUT": TIMEOUT,
    "BACKOFF_INITIAL": 0.1,
    "BACKOFF_MAX": BACKOFF_MAX,
    "PERMANENT_ERROR_INTERVAL": PERMANENT,
}

Behaviour = Literal["backoff", "retry-after", "permanent"]


def token_body(**fields: object) -> bytes:
    body = {"access_token": CANARY, "token_type": "Bearer", "expires_in": 60}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def oauth_error(status: int, error: str, description: str) -> Fault:
    body = json.dumps({"error": error, "error_description": description})
    return Fault.respond(status, body, name=f"{status} {error}")


TEN_MB = b'{"access_token": "' + b"a" * (10 * 1024 * 1024) + b'"}'


@dataclass(frozen=True)
class Case:
    fault: Fault
    error: str  # /status last_error.error, metrics class, report error
    behaviour: Behaviour
    says: str  # in /status last_error.message: the cause, in words


CASES = {
    "connection-refused": Case(Fault.refuse(), "connect_error", "backoff", "is unreachable"),
    "connection-reset": Case(Fault.reset(), "transport_error", "backoff", "failed:"),
    "accept-and-stall": Case(
        Fault.stall(), "timeout", "backoff", f"did not answer within {TIMEOUT:g} s"
    ),
    "slow-body": Case(
        Fault.drip(token_body(), interval=0.2),
        "timeout",
        "backoff",
        f"did not answer within {TIMEOUT:g} s",
    ),
    "http-500": Case(
        Fault.respond(500, "oops", content_type="text/plain"),
        "http_500",
        "backoff",
        "answered HTTP 500 (text/plain)",
    ),
    "http-502-html": Case(
        Fault.respond(502, "<html><h1>Bad Gateway</h1></html>", content_type="text/html"),
        "http_502",
        "backoff",
        "answered HTTP 502 (text/html)",
    ),
    "http-503": Case(
        Fault.respond(503, "", content_type="text/plain"),
        "http_503",
        "backoff",
        "answered HTTP 503",
    ),
    "503-temporarily-unavailable": Case(
        oauth_error(503, "temporarily_unavailable", "maintenance"),
        "temporarily_unavailable",
        "backoff",
        "temporarily_unavailable (maintenance)",
    ),
    "429-retry-after": Case(
        Fault.respond(429, "slow down", content_type="text/plain", headers={"Retry-After": "1"}),
        "http_429",
        "retry-after",
        "answered HTTP 429",
    ),
    "retry-after-not-a-number": Case(
        # b"\xb2" on the wire: latin-1 "²", which str.isdigit() takes for a digit.
        Fault.respond(503, "", content_type="text/plain", headers={"Retry-After": "\u00b2"}),
        "http_503",
        "backoff",
        "answered HTTP 503",
    ),
    "html-login-page-200": Case(
        Fault.respond(200, "<html><form>Sign in</form></html>", content_type="text/html"),
        "invalid_response",
        "backoff",
        "answered HTTP 200 with text/html that is not a JSON object",
    ),
    "invalid-json": Case(
        Fault.respond(200, token_body()[:25]),
        "invalid_response",
        "backoff",
        "that is not a JSON object",
    ),
    "missing-access-token": Case(
        Fault.respond(200, token_body(access_token=None)),
        "invalid_response",
        "backoff",
        "answered without an access_token",
    ),
    "expires-in-negative": Case(
        Fault.respond(200, token_body(expires_in=-5)),
        "invalid_response",
        "backoff",
        "expires_in is -5",
    ),
    "expires-in-zero": Case(
        Fault.respond(200, token_body(expires_in=0)),
        "invalid_response",
        "backoff",
        "expires_in is 0",
    ),
    "expires-in-huge": Case(
        Fault.respond(200, token_body(expires_in=10**12)),
        "invalid_response",
        "backoff",
        "longer than the",
    ),
    "expires-in-string": Case(
        Fault.respond(200, token_body(expires_in="soon")),
        "invalid_response",
        "backoff",
        "expires_in is not a number",
    ),
    "10mb-body": Case(
        Fault.respond(200, TEN_MB),
        "response_too_large",
        "backoff",
        "answered more than 1048576 bytes",
    ),
    "10mb-body-chunked": Case(
        Fault.respond(200, TEN_MB, chunked=True),
        "response_too_large",
        "backoff",
        "answered more than 1048576 bytes",
    ),
    "token-type-not-bearer": Case(
        Fault.respond(200, token_body(token_type="DPoP")),
        "unsupported_token_type",
        "backoff",
        "issued a token of type 'DPoP'",
    ),
    "invalid-client-401": Case(
        oauth_error(401, "invalid_client", "client authentication failed"),
        "invalid_client",
        "permanent",
        "rejected client 'client-basic': invalid_client",
    ),
    "invalid-grant-400": Case(
        oauth_error(400, "invalid_grant", "grant request is invalid"),
        "invalid_grant",
        "permanent",
        "rejected client 'client-basic': invalid_grant",
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_idp_fault_keeps_the_last_good_token_and_is_retried_as_named(
    case: Case, idps, proxy_for, reports, sidecars
) -> None:
    idp = idps(TTL)
    proxy = proxy_for(idp)
    sidecar = sidecars.for_idp(
        idp,
        proxy=proxy,
        reports=reports,
        **SETTINGS,
    )
    with TokenReader(sidecar.output, allow_missing=False) as app:
        wait_until("the first token", lambda: app.reads)
        proxy.set(case.fault)
        switched = time.monotonic()
        good = sidecar.output.read_bytes()

        # The first refresh meets the fault (0.5 s after the token arrived).
        failures_before = sidecar.attempts(_outcome(case))
        wait_until(
            "the first faulty attempt",
            lambda: sidecar.attempts(_outcome(case)) > failures_before,
            timeout=15,
        )
        faulty = [s for s in proxy.seen_since(switched) if s.fault == case.fault.name]
        start = faulty[0].at if faulty else time.monotonic()
        time.sleep(max(0.0, start + WINDOW - time.monotonic()))

        status = sidecar.status()
        in_window = [s.at for s in proxy.seen_since(start) if s.at < start + WINDOW]
        assert sidecar.output.read_bytes() == good, "a failed refresh touched the token file"
        assert sidecar.readyz() == 200
        assert status["state"] == "retrying", status
        assert status["ready"] is True
        last = status["last_error"]
        assert last["error"] == case.error, last
        assert last["permanent"] is (case.behaviour == "permanent"), last
        assert case.says in last["message"], last
        assert f"{proxy.url}/token" in last["message"], "the message names the endpoint"
        attempts = status["consecutive_failures"]
        assert attempts >= 1
        assert sidecar.attempts(_outcome(case)) >= attempts  # the metrics count them too
        _check_spacing(case, in_window, attempts, _planned_retries(sidecar, case))
        failing = reports.wait_for("failing", error=case.error)
        assert failing["consecutive_failures"] >= 1
        assert failing["namespace"] == "faults"

        # The IdP is back: the next attempt succeeds, before the token expires.
        proxy.set(Fault.passthrough())
        # The bound is the token's life: a later recovery would show as an expired read.
        status = sidecar.wait_status(
            "recovery", lambda s: s["state"] == "ready" and s["refresh_count"] >= 2, timeout=TTL
        )
        assert status["consecutive_failures"] == 0
        assert sidecar.output.read_bytes() != good
        assert sidecar.readyz() == 200
        reports.wait_for("recovered")
    assert app.violations == [], app.violations
    assert app.missing == 0
    assert len(app.tokens) >= 2
    assert reports.problems == []
    assert reports.states()[-1] == "recovered"
    _nothing_leaked(sidecar, reports, idp.basic.client_secret)
    assert sidecar.stop() == 0


def _outcome(case: Case) -> str:
    return "permanent_error" if case.behaviour == "permanent" else "transient_error"


def _planned_retries(sidecar, case: Case) -> list[float]:
    """The delays the sidecar planned after each faulty attempt (its `retry_in`): the
    plan, on the sidecar's own clock, which a loaded machine may only delay."""
    return [
        float(line["retry_in"])
        for line in sidecar.logs()
        if line.get("error") == case.error and "retry_in" in line
    ]


def _check_spacing(case: Case, times: list[float], attempts: int, planned: list[float]) -> None:
    # Measured gaps are checked only from below (load delays, it never hastens); the
    # upper bounds are the sidecar's own plan.
    gaps = [round(b - a, 3) for a, b in pairwise(times)]
    assert planned, "no faulty attempt logged its retry_in"
    if case.behaviour == "permanent":
        # Planned 2.7..3 s apart, so the IdP saw nothing else in the 2.2 s window (a late
        # look at /status may already count the next attempt: the window is the proxy's).
        assert all(delay > WINDOW for delay in planned), planned
        assert len(times) == 1, f"a permanent error was retried in {WINDOW} s: {times}"
        return
    if case.behaviour == "retry-after":
        assert len(times) >= 2, times
        assert all(gap >= 0.95 for gap in gaps), f"Retry-After: 1 not honoured: {gaps}"
        assert all(delay >= 1 for delay in planned), planned
        assert attempts <= 3, attempts
        return
    # Backoff: full jitter up to BACKOFF_MAX 0.3 s, so several attempts in the window.
    assert attempts >= 2, f"{attempts} attempts, {gaps}"
    assert all(gap >= 0.05 for gap in gaps), f"below the backoff floor: {gaps}"
    assert all(delay <= BACKOFF_MAX for delay in planned), f"backoff above its cap: {planned}"


def _nothing_leaked(sidecar, reports, client_secret: str) -> None:
    seen = sidecar.log_text() + json.dumps(sidecar.status()) + json.dumps(reports.received())
    for secret in (CANARY, client_secret):
        assert secret not in seen


def test_idp_down_at_start_means_no_file_not_ready_and_a_report(
    idps, proxy_for, reports, sidecars
) -> None:
    idp = idps(TTL)
    proxy = proxy_for(idp)
    proxy.set(Fault.refuse())
    sidecar = sidecars.for_idp(
        idp,
        proxy=proxy,
        reports=reports,
        **SETTINGS,
    )
    status = sidecar.wait_status("failing", lambda s: s["consecutive_failures"] >= 2)
    assert status["state"] == "failing"
    assert status["ready"] is False
    assert sidecar.readyz() == 503
    assert not sidecar.output.exists()
    assert reports.wait_for("failing", error="connect_error")["consecutive_failures"] >= 1
    proxy.set(Fault.passthrough())
    sidecar.wait_status("ready", lambda s: s["state"] == "ready")
    assert sidecar.readyz() == 200
    assert json.loads(sidecar.output.read_text())["token_type"] == "Bearer"
    reports.wait_for("recovered")
