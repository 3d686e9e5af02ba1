"""Turning a token endpoint's HTTP answer into a `Token`, or into a clear error.

Identity providers and the gateways in front of them answer with many things besides a
token: HTML error pages, empty bodies, `expires_in: "soon"`, DPoP tokens, rate-limit
pages. This module is the one place that decides what is a usable token (RFC 6749
section 5.1, RFC 8693 section 2.2.1) and which failures are worth retrying soon
(transient) or only slowly (`PERMANENT_OAUTH_ERRORS`). It is pure: bytes in, a `Token`
or a `TokenEndpointError` out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .errors import PERMANENT_OAUTH_ERRORS, TokenEndpointError
from .expiry import LifetimeSource, lifetime_from, parse_expires_in
from .redact import redactor
from .schedule import parse_retry_after

__all__ = ["MAX_RESPONSE_BYTES", "Token", "describe_client", "parse_token_response"]

# A token response is a few KiB at most; a body ten times bigger than any real one is
# a misrouted download or an attack, and must not become our memory footprint.
MAX_RESPONSE_BYTES = 1024 * 1024

# RFC 8693 section 2.2.1: an issued token that is not an access token has type N_A.
_ACCEPTED_TOKEN_TYPES = frozenset({"bearer"})
_EXCHANGE_TOKEN_TYPES = frozenset({"bearer", "n_a"})


@dataclass(frozen=True)
class Token:
    """A token as received, with its lifetime measured on both of our clocks.

    `received_*` is when the token was asked for (the request was sent): the earliest
    instant the IdP can have started its lifetime. The credentials are excluded from
    `repr` so a stray `log.debug(token)` leaks nothing.
    """

    access_token: str = field(repr=False)
    token_type: str
    lifetime: float
    lifetime_source: LifetimeSource
    received_mono: float
    received_wall: float
    scope: str | None = None
    refresh_token: str | None = field(default=None, repr=False)
    issued_token_type: str | None = None

    @property
    def expires_mono(self) -> float:
        return self.received_mono + self.lifetime

    @property
    def expires_wall(self) -> float:
        return self.received_wall + self.lifetime


def describe_client(client_id: str | None) -> str:
    return f"client {client_id!r}" if client_id else "the request"


def parse_token_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    endpoint: str,
    client_id: str | None,
    token_exchange: bool,
    received_mono: float,
    received_wall: float,
    default_lifetime: float,
) -> Token:
    """The token in a token endpoint response, or TokenEndpointError saying what is wrong."""
    retry_after = parse_retry_after(headers.get("retry-after"), received_wall)
    ctype = headers.get("content-type", "").split(";")[0].strip().lower() or "no content type"
    document = _json_object(body)

    def fail(message: str, error: str, description: str | None = None) -> NoReturn:
        raise TokenEndpointError(
            f"token endpoint {endpoint} {message}",
            error=error,
            description=description,
            status=status,
            retry_after=retry_after,
            permanent=error in PERMANENT_OAUTH_ERRORS,
        )

    error = document.get("error") if document is not None else None
    # An error that prints as nothing (" ") names no error: judged as if absent.
    code = _printable(error, 64) if isinstance(error, str) else ""
    if document is not None and code:
        # RFC 6749 section 5.2; some IdPs send it with 200, so check before the status.
        raw = document.get("error_description")
        description = _printable(raw, 300) if isinstance(raw, str) and raw else None
        suffix = f" ({description})" if description else ""
        fail(f"rejected {describe_client(client_id)}: {code}{suffix}", code, description)
    if not 200 <= status < 300:
        what = "a JSON body without an OAuth error" if document is not None else ctype
        fail(f"answered HTTP {status} ({what})", f"http_{status}")
    if document is None:
        fail(f"answered HTTP {status} with {ctype} that is not a JSON object", "invalid_response")

    access_token = document.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        fail("answered without an access_token", "invalid_response")
    if any(ch.isspace() or not ch.isprintable() for ch in access_token):
        fail(
            "answered an access_token containing whitespace or control characters",
            "invalid_response",
        )

    token_type = document.get("token_type", "Bearer")
    accepted = _EXCHANGE_TOKEN_TYPES if token_exchange else _ACCEPTED_TOKEN_TYPES
    if not isinstance(token_type, str) or token_type.lower() not in accepted:
        shown = _printable(token_type, 32) if isinstance(token_type, str) else type(token_type)
        fail(
            f"issued a token of type {shown!r}; only Bearer tokens can be used from a file",
            "unsupported_token_type",
        )

    try:
        expires_in = parse_expires_in(document.get("expires_in"))
        lifetime, source = lifetime_from(
            expires_in, access_token, now=received_wall, default=default_lifetime
        )
    except ValueError as exc:
        fail(f"answered an unusable expiry: {exc}", "invalid_response")
    # The IdP counts from its own clock truncated to whole seconds (a JWT's iat and exp
    # are integers), so the token can die up to a second before `received + expires_in`.
    # End it on the whole second at or before that instant: the expiry written to the
    # file, shown in /status and used to remove the file is then never after the JWT exp.
    whole = math.floor(received_wall + lifetime) - received_wall
    if whole > 0:
        lifetime = whole

    refresh_token = document.get("refresh_token")
    scope = document.get("scope")
    issued_type = document.get("issued_token_type")
    return Token(
        access_token=access_token,
        token_type=token_type,
        lifetime=lifetime,
        lifetime_source=source,
        received_mono=received_mono,
        received_wall=received_wall,
        scope=scope if isinstance(scope, str) and scope else None,
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        issued_token_type=issued_type if isinstance(issued_type, str) else None,
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    def reject_constant(name: str) -> NoReturn:  # NaN and Infinity are not JSON
        raise ValueError(name)

    try:
        document = json.loads(body.decode("utf-8"), parse_constant=reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _printable(text: str, limit: int) -> str:
    """IdP-supplied text, safe for one log line: no control characters, bounded length,
    and none of our credentials — some IdPs echo the rejected value back."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    cleaned = redactor.scrub(cleaned)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"
