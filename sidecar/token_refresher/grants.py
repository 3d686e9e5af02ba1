"""What we send to the token endpoint: grant parameters and client authentication.

One function per question. `grant_params` builds the form of each grant —
client_credentials (RFC 6749 section 4.4), refresh_token (section 6), token exchange
(RFC 8693 section 2.1) and jwt-bearer (RFC 7523 section 2.1) — and `client_auth` the
authentication of the client (RFC 6749 section 2.3, RFC 7523 section 2.2) as an httpx2
`Auth`, `TokenRequestAuth`: a Basic header or form fields added to the request. The
private_key_jwt assertion is signed by authlib's `PrivateKeyJWT`, imported only for that
method; what authlib leaves to us there is the header `kid` and the lifetime
(`ASSERTION_LIFETIME`, not authlib's hour). The other methods are a header or two form
fields, written here: authlib's encoders for them live in `authlib.oauth2`, whose package
import loads its whole authorization server (42 modules, 1 MiB of a sidecar meant to stay
near 38), and its `client_secret_basic` sends the id and secret without the form encoding
RFC 6749 section 2.3.1 asks for (authlib reverted that fix, authlib pull 594), so a
secret with `+`, `%` or `:` fails at every IdP that decodes them, oidc-provider and Dex
among them. Neither authlib's httpx integration nor `AsyncOAuth2Client` is used: its
`fetch_token` reads unbounded bodies and keeps its own token state and expiry (with the
60 s leeway of authlib issue #716), and this sidecar owns all three.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Generator, Sequence
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode

import httpx2

from .clock import Clock, SystemClock
from .credentials import CredentialFile, PrivateKeyFile
from .settings import ClientAuth, Grant, Settings

__all__ = [
    "ASSERTION_LIFETIME",
    "BASIC_ENCODING_HINT",
    "CLIENT_ASSERTION_TYPE",
    "GRANT_TYPES",
    "Credentials",
    "TokenRequestAuth",
]

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GRANT_TYPES: dict[Grant, str] = {
    Grant.CLIENT_CREDENTIALS: "client_credentials",
    Grant.REFRESH_TOKEN: "refresh_token",
    Grant.TOKEN_EXCHANGE: "urn:ietf:params:oauth:grant-type:token-exchange",
    Grant.JWT_BEARER: "urn:ietf:params:oauth:grant-type:jwt-bearer",
}

# Seconds from iat to exp of a private_key_jwt assertion. A fresh one is signed for
# every request, so it only has to outlive the request and modest clock skew; a short
# one is worth less to whoever steals it, and the IdP keeps its jti (RFC 7523 section 3)
# in a replay cache only that long. Auth0 refuses more than 5 minutes, Salesforce more
# than 3; Keycloak (26.2+) accepts an assertion only within 60 s of its iat, whatever
# exp says — which a fresh one always is. authlib's default is an hour.
ASSERTION_LIFETIME = 120


class Credentials:
    """The credential files of one configuration, and the requests built from them."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self._settings = settings
        self._clock: Clock = clock or SystemClock()
        self._secret = (
            CredentialFile(settings.client_secret_file, what="client secret")
            if settings.client_secret_file is not None
            else None
        )
        self._key = (
            PrivateKeyFile(settings.private_key_file, settings.private_key_alg)
            if settings.private_key_file is not None
            else None
        )
        # Projected tokens are re-read on every use: the kubelet rotates them, and an
        # old one is rejected by the IdP long before its file disappears.
        self._sa_token = (
            CredentialFile(
                settings.service_account_token_file, what="service-account token", always=True
            )
            if settings.service_account_token_file is not None
            else None
        )

    def grant_params(self, grant: Grant, *, refresh_token: str | None = None) -> dict[str, str]:
        """The form fields of a token request for `grant` (may hold credentials)."""
        s = self._settings
        params = {"grant_type": GRANT_TYPES[grant]}
        if grant is Grant.REFRESH_TOKEN:
            if not refresh_token:
                raise ValueError("the refresh_token grant needs a refresh token")
            params["refresh_token"] = refresh_token
        elif grant is Grant.TOKEN_EXCHANGE:
            params["subject_token"] = self._service_account_token()
            params["subject_token_type"] = s.subject_token_type
            if s.requested_token_type:
                params["requested_token_type"] = s.requested_token_type
        elif grant is Grant.JWT_BEARER:
            params["assertion"] = self._service_account_token()
        for name in ("scope", "audience", "resource"):
            value = getattr(s, name)
            if value:
                params[name] = value
        if s.token_params:
            # Validated by Settings: never a grant or credential field.
            params.update(parse_qsl(s.token_params, keep_blank_values=True))
        return params

    def client_auth(self, token_endpoint: str) -> TokenRequestAuth | None:
        """Client authentication for one request, from the credential files as they are now."""
        s = self._settings
        method = s.effective_client_auth
        if method is ClientAuth.NONE:
            # RFC 6749 section 2.3.1 public client: identify with client_id alone.
            if not s.client_id:
                return None
            return TokenRequestAuth(fields=[("client_id", s.client_id)])
        # Settings guarantees each method its client id and credential file (combinations).
        client_id = s.client_id or ""
        if method is ClientAuth.CLIENT_SECRET_BASIC:
            assert self._secret is not None
            return TokenRequestAuth(basic=(client_id, self._secret.read()))
        if method is ClientAuth.CLIENT_SECRET_POST:
            assert self._secret is not None
            secret = self._secret.read()
            return TokenRequestAuth(fields=[("client_id", client_id), ("client_secret", secret)])
        if method is ClientAuth.PRIVATE_KEY_JWT:
            assert self._key is not None
            assertion = self._private_key_assertion(self._key.read(), token_endpoint)
            return TokenRequestAuth(fields=_assertion_fields(assertion))
        # RFC 7523 section 2.2 with the pod's projected token as the assertion: the IdP
        # federates the cluster's service-account issuer, so no secret exists anywhere.
        fields = _assertion_fields(self._service_account_token())
        if client_id:
            fields.insert(0, ("client_id", client_id))
        return TokenRequestAuth(fields=fields)

    def _private_key_assertion(self, key: Any, token_endpoint: str) -> str:
        from authlib.oauth2.rfc7523 import PrivateKeyJWT

        # Without a kid, an IdP holding two keys for the client — as during every key
        # rotation — may try only one: Keycloak answers "Signature on JWT token failed
        # validation". The thumbprint needs no configuration and names the key exactly.
        kid = self._settings.private_key_id or key.thumbprint()
        now = int(self._clock.time())
        claims = {
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "jti": secrets.token_urlsafe(24),  # unique per assertion, never reused
        }
        signer = PrivateKeyJWT(
            token_endpoint, claims=claims, headers={"kid": kid}, alg=self._settings.private_key_alg
        )
        # `sign` reads the client as authlib's ClientAuth carries it: the id, and the key
        # in place of a secret.
        client = SimpleNamespace(client_id=self._settings.client_id, client_secret=key)
        return str(signer.sign(client, token_endpoint))

    def _service_account_token(self) -> str:
        assert self._sa_token is not None  # guaranteed by Settings
        return self._sa_token.read()


def _assertion_fields(assertion: str) -> list[tuple[str, str]]:
    return [("client_assertion_type", CLIENT_ASSERTION_TYPE), ("client_assertion", assertion)]


def basic_credentials(client_id: str, secret: str) -> str:
    """The `Authorization` value of client_secret_basic (RFC 6749 section 2.3.1): the id
    and the secret each form-encoded (appendix B), then joined by `:` and base64-encoded
    as HTTP Basic does. Without the form encoding a `+` arrives as a space and a `:` in the
    id splits it at an IdP that decodes; any secret outside ASCII is sent as its UTF-8."""
    pair = f"{quote_plus(client_id, safe='')}:{quote_plus(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode("ascii")).decode("ascii")


# What an `invalid_client` answer adds when the encoding changed the id or the secret.
BASIC_ENCODING_HINT = (
    "the client id or secret has characters other than letters, digits and -._~, which "
    "client_secret_basic form-encodes as RFC 6749 section 2.3.1 asks; an identity provider "
    "that does not decode them refuses the client: CLIENT_AUTH=client_secret_post sends "
    "them in the form instead"
)


class TokenRequestAuth(httpx2.Auth):
    """Client authentication added to a token request: a Basic `Authorization` header
    (`basic`, the id and secret) and/or `fields` appended to its form body.

    `hint`: what to add to an `invalid_client` answer (`BASIC_ENCODING_HINT` when the form
    encoding changed the Basic credentials), never the credentials themselves."""

    requires_request_body = True

    def __init__(
        self, *, basic: tuple[str, str] | None = None, fields: Sequence[tuple[str, str]] = ()
    ) -> None:
        self._basic = basic
        self._fields = list(fields)
        encoded = basic is not None and any(quote_plus(v, safe="") != v for v in basic)
        self.hint = BASIC_ENCODING_HINT if encoded else None

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        headers = httpx2.Headers(request.headers)
        body = request.content
        if self._fields:
            # The body is already a form (httpx2 encoded the grant's `data` the same way).
            extra = urlencode(self._fields).encode("ascii")
            body = body + b"&" + extra if body else extra
        if self._basic is not None:
            headers["Authorization"] = basic_credentials(*self._basic)
        headers["Content-Length"] = str(len(body))
        yield httpx2.Request(request.method, request.url, headers=headers, content=body)
