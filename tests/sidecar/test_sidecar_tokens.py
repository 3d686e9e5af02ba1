"""Token endpoint answers: what is a usable token, and what each malformed one becomes."""

from __future__ import annotations

import base64
import json

import httpx2
import pytest

from token_refresher.errors import TokenEndpointError
from token_refresher.idp import IdP
from token_refresher.tokens import MAX_RESPONSE_BYTES, parse_token_response

URL = "https://idp.example/token"
NOW = 1_800_000_000.0


def parse(
    status: int,
    body: bytes | str | dict,
    *,
    exchange: bool = False,
    headers: dict[str, str] | None = None,
):
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    return parse_token_response(
        status,
        headers or {"content-type": "application/json"},
        body,
        endpoint=URL,
        client_id="billing",
        token_exchange=exchange,
        received_mono=10.0,
        received_wall=NOW,
        default_lifetime=300.0,
    )


def jwt(claims: dict) -> str:
    def part(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def test_expires_in_is_measured_from_receipt_on_both_clocks() -> None:
    token = parse(
        200,
        {
            "access_token": "abc",
            "token_type": "Bearer",
            "expires_in": 60,
            "scope": "read",
            "refresh_token": "r1",
        },
    )
    assert (token.lifetime, token.lifetime_source) == (60, "expires_in")
    assert token.expires_mono == 70.0
    assert token.expires_wall == NOW + 60
    assert (token.scope, token.refresh_token) == ("read", "r1")


def test_lowercase_bearer_and_missing_token_type_are_accepted() -> None:
    assert parse(200, {"access_token": "a", "token_type": "bearer", "expires_in": 5}).lifetime == 5
    assert parse(200, {"access_token": "a", "expires_in": 5}).token_type == "Bearer"


def test_numeric_string_expires_in_is_accepted() -> None:
    assert parse(200, {"access_token": "a", "expires_in": "3599"}).lifetime == 3599


def test_jwt_exp_is_used_when_expires_in_is_missing() -> None:
    token = parse(200, {"access_token": jwt({"exp": NOW + 900}), "token_type": "Bearer"})
    assert (token.lifetime, token.lifetime_source) == (900, "jwt_exp")


def test_default_lifetime_when_neither_expires_in_nor_jwt_exp() -> None:
    token = parse(200, {"access_token": "opaque", "token_type": "Bearer"})
    assert (token.lifetime, token.lifetime_source) == (300.0, "default")


def test_token_exchange_accepts_n_a_token_type() -> None:
    body = {
        "access_token": "a",
        "token_type": "N_A",
        "expires_in": 60,
        "issued_token_type": "urn:ietf:params:oauth:token-type:jwt",
    }
    assert parse(200, body, exchange=True).issued_token_type.endswith(":jwt")
    with pytest.raises(TokenEndpointError, match="type 'N_A'"):
        parse(200, body)


HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"

MALFORMED = [
    # (case, status, body, content type, error code, permanent, words in the message)
    (
        "invalid JSON",
        200,
        "{not json",
        "application/json",
        "invalid_response",
        False,
        "not a JSON object",
    ),
    ("JSON array", 200, "[1, 2]", "application/json", "invalid_response", False, "JSON object"),
    ("empty body", 200, "", "application/json", "invalid_response", False, "JSON object"),
    (
        "missing access_token",
        200,
        {"token_type": "Bearer", "expires_in": 60},
        None,
        "invalid_response",
        False,
        "without an access_token",
    ),
    (
        "empty access_token",
        200,
        {"access_token": "", "expires_in": 60},
        None,
        "invalid_response",
        False,
        "without an access_token",
    ),
    (
        "numeric access_token",
        200,
        {"access_token": 42},
        None,
        "invalid_response",
        False,
        "without an access_token",
    ),
    (
        "access_token with newline",
        200,
        {"access_token": "a\nb"},
        None,
        "invalid_response",
        False,
        "whitespace",
    ),
    (
        "expires_in negative",
        200,
        {"access_token": "a", "expires_in": -5},
        None,
        "invalid_response",
        False,
        "positive",
    ),
    (
        "expires_in zero",
        200,
        {"access_token": "a", "expires_in": 0},
        None,
        "invalid_response",
        False,
        "positive",
    ),
    (
        "expires_in huge",
        200,
        {"access_token": "a", "expires_in": 10**12},
        None,
        "invalid_response",
        False,
        "longer than",
    ),
    (
        "expires_in string",
        200,
        {"access_token": "a", "expires_in": "soon"},
        None,
        "invalid_response",
        False,
        "not a number",
    ),
    (
        "expires_in boolean",
        200,
        {"access_token": "a", "expires_in": True},
        None,
        "invalid_response",
        False,
        "boolean",
    ),
    (
        "expires_in NaN",
        200,
        '{"access_token": "a", "expires_in": NaN}',
        "application/json",
        "invalid_response",
        False,
        "JSON object",
    ),
    (
        "expires_in object",
        200,
        {"access_token": "a", "expires_in": {"s": 1}},
        None,
        "invalid_response",
        False,
        "dict",
    ),
    (
        "JWT already expired",
        200,
        {"access_token": jwt({"exp": NOW - 100})},
        None,
        "invalid_response",
        False,
        "in the past",
    ),
    (
        "token_type mac",
        200,
        {"access_token": "a", "token_type": "mac"},
        None,
        "unsupported_token_type",
        False,
        "type 'mac'",
    ),
    (
        "token_type DPoP",
        200,
        {"access_token": "a", "token_type": "DPoP"},
        None,
        "unsupported_token_type",
        False,
        "Bearer",
    ),
    ("HTML 502 page", 502, HTML_502, "text/html", "http_502", False, "HTTP 502 (text/html)"),
    ("HTML 200 page", 200, HTML_502, "text/html", "invalid_response", False, "text/html"),
    ("503 empty", 503, "", "", "http_503", False, "HTTP 503"),
    ("400 JSON without error", 400, {"message": "no"}, None, "http_400", False, "HTTP 400"),
    (
        "invalid_client",
        401,
        {"error": "invalid_client", "error_description": "Client authentication failed"},
        None,
        "invalid_client",
        True,
        "rejected client 'billing': invalid_client (Client auth",
    ),
    (
        "invalid_grant",
        400,
        {"error": "invalid_grant"},
        None,
        "invalid_grant",
        True,
        "invalid_grant",
    ),
    (
        "unauthorized_client",
        400,
        {"error": "unauthorized_client"},
        None,
        "unauthorized_client",
        True,
        "unauthorized_client",
    ),
    (
        "unsupported_grant_type",
        400,
        {"error": "unsupported_grant_type"},
        None,
        "unsupported_grant_type",
        True,
        "unsupported_grant_type",
    ),
    (
        "invalid_scope is transient",
        400,
        {"error": "invalid_scope"},
        None,
        "invalid_scope",
        False,
        "invalid_scope",
    ),
    (
        "temporarily_unavailable",
        503,
        {"error": "temporarily_unavailable"},
        None,
        "temporarily_unavailable",
        False,
        "temporarily_unavailable",
    ),
    (
        "error in a 200",
        200,
        {"error": "invalid_client"},
        None,
        "invalid_client",
        True,
        "invalid_client",
    ),
]


@pytest.mark.parametrize(
    ("status", "body", "ctype", "code", "permanent", "words"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_responses_raise_a_clear_error(
    status: int, body: object, ctype: str | None, code: str, permanent: bool, words: str
) -> None:
    headers = {"content-type": ctype if ctype is not None else "application/json"}
    with pytest.raises(TokenEndpointError) as caught:
        parse(status, body, headers=headers)  # type: ignore[arg-type]
    exc = caught.value
    assert (exc.error, exc.permanent, exc.status) == (code, permanent, status)
    assert str(exc).startswith(f"token endpoint {URL} ")
    assert words in str(exc)


def test_retry_after_is_carried_on_the_error() -> None:
    with pytest.raises(TokenEndpointError) as caught:
        parse(429, {"error": "slow_down"}, headers={"retry-after": "42"})
    assert caught.value.retry_after == 42


def test_control_characters_and_length_of_descriptions_are_tamed() -> None:
    with pytest.raises(TokenEndpointError) as caught:
        parse(400, {"error": "invalid_request", "error_description": "a\nb" + "x" * 1000})
    message = str(caught.value)
    assert "\n" not in message
    assert len(message) < 500


async def test_ten_megabyte_body_is_refused_without_buffering_it(clock, make_settings) -> None:
    chunks_served = 0

    async def huge():
        nonlocal chunks_served
        for _ in range(10 * 16):
            chunks_served += 1
            yield b"x" * 65536

    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, content=huge()))
    async with httpx2.AsyncClient(transport=transport) as client:
        with pytest.raises(TokenEndpointError) as caught:
            await IdP(make_settings(), client, clock).request_token(
                {"grant_type": "client_credentials"}, None, token_exchange=False
            )
    assert caught.value.error == "response_too_large"
    assert chunks_served <= MAX_RESPONSE_BYTES // 65536 + 1


async def test_declared_oversized_body_is_refused_before_reading(clock, make_settings) -> None:
    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(
            200, headers={"content-length": str(10 * 2**20)}, content=b""
        )
    )
    async with httpx2.AsyncClient(transport=transport) as client:
        with pytest.raises(TokenEndpointError, match="more than 1048576 bytes"):
            await IdP(make_settings(), client, clock).request_token(
                {"grant_type": "client_credentials"}, None, token_exchange=False
            )
