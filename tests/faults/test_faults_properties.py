"""Property-based tests (hypothesis): the pure cores under arbitrary input.

Extends, without repeating, tests/sidecar/test_sidecar_schedule.py (which holds the
properties of `next_refresh` and `first_refresh`): here are the retry side of the
schedule, the expiry the sidecar derives from a token response, the response parser
under any bytes, and the operator's annotation parsing under any annotations.
"""

from __future__ import annotations

import json
import math
import string
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from token_refresher.errors import TokenEndpointError
from token_refresher.expiry import MAX_LIFETIME
from token_refresher.schedule import (
    PERMANENT_FIRST_DELAY,
    RETRY_AFTER_CAP,
    parse_retry_after,
    permanent_delay,
    retry_delay,
)
from token_refresher.tokens import parse_token_response
from token_refresher.writer import rfc3339
from token_refresher_operator.annotations import (
    KEYS,
    MAX_VALUE_LENGTH,
    PREFIX,
    InjectionSpec,
    parse,
)
from token_refresher_operator.config import ClusterConfig
from token_refresher_operator.errors import AnnotationError
from token_refresher_operator.patch import build_patch

draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
seconds = st.floats(min_value=0.001, max_value=3600.0)


def fixed(value: float):
    return lambda: value


# --- retries -----------------------------------------------------------------------------


@given(
    failures=st.integers(min_value=1, max_value=200),
    initial=seconds,
    extra=st.floats(min_value=0.0, max_value=3600.0),
    draw=draws,
)
def test_backoff_stays_between_its_floor_and_its_cap(
    failures: int, initial: float, extra: float, draw: float
) -> None:
    maximum = initial + extra
    delay = retry_delay(failures, initial=initial, maximum=maximum, random=fixed(draw))
    cap = min(maximum, initial * 2.0 ** (failures - 1))
    assert initial / 2 <= delay <= max(cap, initial / 2)


@given(
    failures=st.integers(min_value=1, max_value=200),
    initial=seconds,
    draw=draws,
    until_expiry=st.floats(min_value=0.0001, max_value=86400.0),
)
def test_while_a_token_is_valid_the_next_retry_lands_before_it_expires(
    failures: int, initial: float, draw: float, until_expiry: float
) -> None:
    delay = retry_delay(
        failures,
        initial=initial,
        maximum=60.0 + initial,
        random=fixed(draw),
        until_expiry=until_expiry,
    )
    if initial / 2 < until_expiry:
        assert delay < until_expiry
    else:  # the floor wins: no tight loop, even for the last moments of a token
        assert delay == initial / 2


@given(
    initial=st.floats(min_value=0.1, max_value=60.0),
    lifetime=st.floats(min_value=0.01, max_value=600.0),
    draw=draws,
)
@example(initial=1.0, lifetime=513.0, draw=0.0)  # > 1024 failures: 2.0 ** 1024 overflowed
@settings(max_examples=100, deadline=None)
def test_an_outage_until_expiry_costs_a_bounded_number_of_attempts(
    initial: float, lifetime: float, draw: float
) -> None:
    # Retry after retry while the token runs out: denser near expiry, never a tight loop.
    elapsed, attempts, failures = 0.0, 0, 0
    while elapsed < lifetime:
        failures += 1
        attempts += 1
        elapsed += retry_delay(
            failures,
            initial=initial,
            maximum=60.0,
            random=fixed(draw),
            until_expiry=lifetime - elapsed,
        )
        assert attempts <= lifetime / (initial / 2) + 1
    assert attempts >= 1


@given(
    failures=st.integers(min_value=1, max_value=50),
    retry_after=st.floats(min_value=0.0, max_value=10.0**9),
    draw=draws,
    until_expiry=st.none() | st.floats(min_value=0.001, max_value=3600.0),
)
def test_retry_after_is_always_honoured_up_to_its_cap(
    failures: int, retry_after: float, draw: float, until_expiry: float | None
) -> None:
    delay = retry_delay(
        failures,
        initial=1.0,
        maximum=60.0,
        random=fixed(draw),
        retry_after=retry_after,
        until_expiry=until_expiry,
    )
    assert delay >= min(retry_after, RETRY_AFTER_CAP)
    assert delay <= max(60.0, min(retry_after, RETRY_AFTER_CAP))


@given(
    failures=st.integers(1, 10**6),
    ceiling=seconds,
    draw=draws,
    retry_after=st.none() | st.floats(0.0, 10.0**9),
)
def test_permanent_errors_are_retried_no_sooner_than_the_ladder_and_within_the_ceiling(
    failures: int, ceiling: float, draw: float, retry_after: float | None
) -> None:
    delay = permanent_delay(failures, ceiling=ceiling, random=fixed(draw), retry_after=retry_after)
    step = min(ceiling, PERMANENT_FIRST_DELAY * 2.0 ** min(failures - 1, 1000))
    assert delay >= step * 0.9
    if retry_after is None:
        assert delay <= ceiling
    else:
        assert delay >= min(retry_after, RETRY_AFTER_CAP)


@given(st.text(max_size=80))
@example("Wed, 21 Oct 2015 07:28:00 GMT")
@example("99999999999999999999999")
@example("Thu, 01 Jan 1970 00:00:00 +2400")
def test_any_retry_after_header_parses_to_none_or_a_finite_wait(header: str) -> None:
    wait = parse_retry_after(header, 1445412480.0)
    assert wait is None or (math.isfinite(wait) and wait >= 0)


@given(
    when=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    now=st.floats(min_value=946684800.0, max_value=4102444800.0),
)
def test_an_http_date_retry_after_waits_until_that_date(when: datetime, now: float) -> None:
    wait = parse_retry_after(format_datetime(when, usegmt=True), now)
    assert wait == pytest.approx(max(0.0, int(when.timestamp()) - now), abs=1e-6)


# --- expiry from a token response ----------------------------------------------------------


def respond(document: object, *, sent: float, status: int = 200):
    return parse_token_response(
        status,
        {"content-type": "application/json"},
        json.dumps(document).encode(),
        endpoint="https://idp.example/token",
        client_id="billing",
        token_exchange=False,
        received_mono=100.0,
        received_wall=sent,
        default_lifetime=300.0,
    )


@given(
    expires_in=st.integers(min_value=1, max_value=int(MAX_LIFETIME)),
    sent=st.floats(min_value=1.0e9, max_value=4.0e9),
)
@example(expires_in=3, sent=1795312424.7)
def test_the_expiry_never_outlives_the_token_and_is_what_the_file_says(
    expires_in: int, sent: float
) -> None:
    token = respond({"access_token": "a", "expires_in": expires_in}, sent=sent)
    # The IdP's own expiry is at least floor(its clock at issue) + expires_in, and it
    # issued after we sent: the sidecar ends the token no later than that...
    assert token.expires_wall <= math.floor(sent) + expires_in
    assert token.expires_wall > sent + expires_in - 1
    # ...on a whole second, which is exactly what the JSON file's expires_at says.
    written = datetime.strptime(rfc3339(token.expires_wall), "%Y-%m-%dT%H:%M:%SZ")
    assert written.replace(tzinfo=UTC).timestamp() == token.expires_wall
    assert token.expires_mono - token.received_mono == token.lifetime > 0


@given(
    remaining=st.integers(min_value=1, max_value=86400),
    sent=st.floats(min_value=1.0e9, max_value=4.0e9),
)
def test_without_expires_in_the_jwt_exp_is_the_expiry(remaining: int, sent: float) -> None:
    import base64

    exp = math.floor(sent) + remaining
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).rstrip(b"=")
    token = respond({"access_token": f"eyJhbGciOiJub25lIn0.{payload.decode()}.sig"}, sent=sent)
    assert token.expires_wall == exp
    assert token.lifetime_source == "jwt_exp"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = ["access_token", "token_type", "expires_in", "refresh_token", "scope", "error"]


@given(
    status=st.sampled_from([200, 201, 400, 401, 429, 500, 503]),
    body=st.one_of(
        st.binary(max_size=200),
        st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6).map(
            lambda d: json.dumps(d).encode()
        ),
    ),
    retry_after=st.none() | st.text(max_size=30),
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_any_response_is_a_token_or_one_clear_error(
    status: int, body: bytes, retry_after: str | None
) -> None:
    headers = {"content-type": "application/json"}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    try:
        token = parse_token_response(
            status,
            headers,
            body,
            endpoint="https://idp.example/token",
            client_id="billing",
            token_exchange=False,
            received_mono=0.0,
            received_wall=1.8e9,
            default_lifetime=300.0,
        )
    except TokenEndpointError as exc:
        failure = exc
    else:
        assert 200 <= status < 300
        assert 0 < token.lifetime <= MAX_LIFETIME
        assert token.access_token
        assert not any(ch.isspace() for ch in token.access_token)
        assert token.token_type.lower() == "bearer"
        return
    message = str(failure)
    assert message.startswith("token endpoint https://idp.example/token ")
    assert all(ch.isprintable() for ch in message), message
    assert failure.error
    assert len(failure.error) <= 64
    assert failure.retry_after is None or failure.retry_after >= 0


# --- the operator's annotations ------------------------------------------------------------

INTERESTING_VALUES = [
    "true",
    "",
    " ",
    "client_credentials",
    "token_exchange",
    "client_secret_post",
    "none",
    "json",
    "raw",
    "https://idp.example/token",
    "http://",
    "billing-oauth/secret",
    "Billing/x",
    "a/../b",
    "/var/run/secrets/token-refresher",
    "/var/run/secrets/token-refresher.io",
    "/",
    "../x",
    "0.5",
    "1",
    "nan",
    "app",
    "app,,worker",
    "token",
    "x" * 2049,
    "line\nbreak",
    "\x00",
    "urn:ietf:params:oauth:token-type:jwt",
    "a=1&b=2",
    "=",
]
known_keys = st.sampled_from(sorted(KEYS))
annotation_keys = st.one_of(
    known_keys.map(lambda k: PREFIX + k),
    st.text(string.ascii_lowercase + "-", min_size=1, max_size=30).map(lambda k: PREFIX + k),
    st.text(max_size=300).map(lambda k: PREFIX + k),
    st.text(max_size=40),  # not ours: ignored
)
annotation_values = st.one_of(
    st.sampled_from(INTERESTING_VALUES),
    st.text(max_size=60),
    st.text(min_size=1, max_size=4).map(lambda t: t * (2100 // len(t))),  # ~2 KB, cheaply
)
annotation_dicts = st.dictionaries(annotation_keys, annotation_values, max_size=12).map(
    lambda d: {**d, PREFIX + "inject": "true"}
)


def _check_lines(lines: list[str]) -> None:
    assert lines, "an AnnotationError without a problem"
    for line in lines:
        assert line.startswith(PREFIX) or line.startswith("spec."), line[:200]
        assert "\n" not in line
        # Values are echoed (escaped) only up to MAX_VALUE_LENGTH, names up to 100
        # characters: a line stays bounded however large the annotations.
        assert len(line) < 10 * MAX_VALUE_LENGTH + 1000, f"a {len(line)}-character line"


@given(
    annotations=annotation_dicts, containers=st.lists(st.text(max_size=10), min_size=1, max_size=3)
)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_any_annotations_parse_to_a_spec_or_errors_naming_annotations(
    annotations: dict[str, str], containers: list[str]
) -> None:
    try:
        spec = parse(annotations=annotations, defaults={}, containers=containers)
    except AnnotationError as exc:
        _check_lines(exc.lines)
        return
    assert isinstance(spec, InjectionSpec)
    assert spec.mount_path.startswith("/")
    assert "/" not in spec.file


CONFIG = ClusterConfig.model_validate(
    {
        "sidecar": {"image": "registry.example/token-refresher:1"},
        "report": {"url": "https://token-refresher.token-refresher.svc:8444/report"},
    }
)


@given(annotations=annotation_dicts)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@example({PREFIX + "inject": "true", PREFIX + "x" * 100_000: "1"})
@example({PREFIX + "inject": "true", PREFIX + "scope": "s" * 100_000})
def test_any_annotated_pod_gets_a_patch_or_a_denial_naming_the_annotation(
    annotations: dict[str, str],
) -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "apps", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }
    try:
        ops = build_patch(
            pod=pod,
            namespace="apps",
            config=CONFIG,
            operator_namespace="token-refresher",
            report_audience="token-refresher-report",
        )
    except AnnotationError as exc:
        _check_lines(exc.lines)
        return
    assert ops, "an annotated pod was neither injected nor denied"
    assert json.loads(json.dumps(ops)) == ops  # plain JSON for the AdmissionReview
    assert ops[-1]["path"] in ("/spec/initContainers", "/spec/initContainers/0")
