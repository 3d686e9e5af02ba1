"""What we send to the token endpoint: grant parameters and client authentication.

One function per question. `grant_params` builds the form of each grant —
client_credentials (RFC 6749 section 4.4), refresh_token (section 6), token exchange
(RFC 8693 section 2.1) and jwt-bearer (RFC 7523 section 2.1) — and `client_auth` the
authentication of the client (RFC 6749 section 2.3, RFC 7523 section 2.2). Client
authentication is authlib's: its `ClientAuth` encoders and `PrivateKeyJWT` signer,
driven by `_AuthlibAuth`, the same few lines as the `OAuth2ClientAuth` of authlib's
httpx integration. We import neither that integration (it pulls in anyio and ~12 MiB
of resident memory for a sidecar meant to stay near 40) nor `AsyncOAuth2Client`:
its `fetch_token` reads unbounded bodies and keeps its own token state and expiry
(with the 60 s leeway of authlib issue #716), and this sidecar owns all three. What
authlib leaves to us in a private_key_jwt assertion is its header `kid` and its
lifetime (`ASSERTION_LIFETIME`, not authlib's hour).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Generator
from typing import Any
from urllib.parse import parse_qsl

import httpx2

from .clock import Clock, SystemClock
from .credentials import CredentialFile, PrivateKeyFile
from .settings import ClientAuth, Grant, Settings

__all__ = [
    "ASSERTION_LIFETIME",
    "CLIENT_ASSERTION_TYPE",
    "GRANT_TYPES",
    "Credentials",
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

    def client_auth(self, token_endpoint: str) -> httpx2.Auth | None:
        """Client authentication for one request, from the credential files as they are now."""
        from authlib.oauth2.auth import ClientAuth as OAuth2ClientAuth

        s = self._settings
        method = s.effective_client_auth
        if method is ClientAuth.NONE:
            # RFC 6749 section 2.3.1 public client: identify with client_id alone.
            if not s.client_id:
                return None
            return _auth(OAuth2ClientAuth(s.client_id, None, "none"))
        if method in (ClientAuth.CLIENT_SECRET_BASIC, ClientAuth.CLIENT_SECRET_POST):
            assert self._secret is not None  # guaranteed by Settings
            return _auth(OAuth2ClientAuth(s.client_id, self._secret.read(), method.value))
        if method is ClientAuth.PRIVATE_KEY_JWT:
            assert self._key is not None
            key = self._key.read()
            return _auth(
                OAuth2ClientAuth(s.client_id, key, self._private_key_signer(key, token_endpoint))
            )
        return _auth(OAuth2ClientAuth(s.client_id, None, self._service_account_assertion()))

    def _private_key_signer(self, key: Any, token_endpoint: str) -> Any:
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
        return PrivateKeyJWT(
            token_endpoint, claims=claims, headers={"kid": kid}, alg=self._settings.private_key_alg
        )

    def _service_account_token(self) -> str:
        assert self._sa_token is not None  # guaranteed by Settings
        return self._sa_token.read()

    def _service_account_assertion(self) -> Callable[..., tuple[str, Any, str]]:
        # RFC 7523 section 2.2 with the pod's projected token as the assertion: the IdP
        # federates the cluster's service-account issuer, so no secret exists anywhere.
        from authlib.common.urls import add_params_to_qs

        assertion = self._service_account_token()
        client_id = self._settings.client_id

        def sign(
            _auth: Any, _method: str, uri: str, headers: Any, body: str
        ) -> tuple[str, Any, str]:
            fields = [
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", assertion),
            ]
            if client_id:
                fields.insert(0, ("client_id", client_id))
            return uri, headers, add_params_to_qs(body or "", fields)

        return sign


class _AuthlibAuth(httpx2.Auth):
    """An httpx2 `Auth` applying an authlib client-authentication method to the form."""

    requires_request_body = True

    def __init__(self, client_auth: Any) -> None:
        self._client_auth = client_auth

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        headers = httpx2.Headers(request.headers)
        url, headers, body = self._client_auth.prepare(
            request.method, str(request.url), headers, request.content.decode("utf-8")
        )
        headers["Content-Length"] = str(len(body.encode("utf-8")))
        yield httpx2.Request(request.method, url, headers=headers, content=body)


def _auth(client_auth: Any) -> httpx2.Auth:
    return _AuthlibAuth(client_auth)
