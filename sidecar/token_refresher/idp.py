"""Talking to the identity provider over httpx2: discovery and token requests.

This is the only module that touches the network for tokens. It finds the token
endpoint (OIDC Discovery 1.0 section 4, unless TOKEN_URL is set), posts a prepared form
with client authentication, reads at most `MAX_RESPONSE_BYTES` of the answer, and turns
every way that can fail — timeouts, refused connections, TLS, oversized or garbage
bodies — into an `IdPError` with a short error class for reports and metrics. It keeps
the client authentication methods and grants discovery advertised, so that a refusal can
name them (`not_advertised`). The httpx2 client is passed in, so tests hand it a
`MockTransport` to inject faults.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2

from .clock import Clock
from .errors import DiscoveryError, IdPError, TokenEndpointError
from .settings import Settings
from .tokens import MAX_RESPONSE_BYTES, Token, parse_token_response

__all__ = ["IdP", "read_capped"]

_WELL_KNOWN = "/.well-known/openid-configuration"
_ADVERTISED = ("token_endpoint_auth_methods_supported", "grant_types_supported")


class _TooLarge(Exception):
    pass


async def read_capped(response: httpx2.Response, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    """The body of a streamed response, refusing to buffer more than `limit` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class IdP:
    """One identity provider: where its token endpoint is, and how to ask it for a token."""

    def __init__(self, settings: Settings, client: httpx2.AsyncClient, clock: Clock) -> None:
        self._settings = settings
        self._client = client
        self._clock = clock
        self._token_url = str(settings.token_url) if settings.token_url else None
        # What discovery advertised (RFC 8414 section 2), for hints on a refusal only.
        self._advertised: dict[str, frozenset[str]] = {}

    @property
    def token_url(self) -> str | None:
        """The token endpoint, once known (configured or discovered)."""
        return self._token_url

    async def token_endpoint(self) -> str:
        if self._token_url is None:
            self._token_url = await self._discover()
        return self._token_url

    async def _discover(self) -> str:
        assert self._settings.issuer is not None  # Settings requires ISSUER or TOKEN_URL
        url = str(self._settings.issuer).rstrip("/") + _WELL_KNOWN
        where = f"OIDC discovery at {url}"
        status, _headers, body = await self._exchange(
            "GET", url, where=where, error_class=DiscoveryError
        )
        if status != 200:
            raise DiscoveryError(
                f"{where} answered HTTP {status}", error=f"http_{status}", status=status
            )
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            document = None
        endpoint = document.get("token_endpoint") if isinstance(document, dict) else None
        if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            raise DiscoveryError(
                f"{where} answered no usable token_endpoint", error="invalid_discovery"
            )
        assert isinstance(document, dict)
        self._advertised = {
            key: frozenset(v for v in values if isinstance(v, str))
            for key in _ADVERTISED
            if isinstance(values := document.get(key), list)
        }
        return endpoint

    def not_advertised(self, key: str, value: str) -> str | None:
        """A hint when discovery listed `key` (`token_endpoint_auth_methods_supported`,
        `grant_types_supported`) without `value`; None when it did not list it at all
        (the RFC 8414 defaults then apply) or listed `value`."""
        listed = self._advertised.get(key)
        if listed is None or value in listed:
            return None
        shown = ", ".join(sorted(listed)[:8]) or "nothing"
        return f"the identity provider's discovery document lists {key}: {shown} (not {value})"

    async def request_token(
        self, params: dict[str, str], auth: httpx2.Auth | None, *, token_exchange: bool
    ) -> Token:
        """POST a token request and parse the answer; raises IdPError on any failure."""
        url = await self.token_endpoint()
        # The IdP starts a token's lifetime somewhere between our request and its answer:
        # counting it from the request, not the answer, never overstates it.
        sent_mono, sent_wall = self._clock.monotonic(), self._clock.time()
        status, headers, body = await self._exchange(
            "POST",
            url,
            where=f"token endpoint {url}",
            error_class=TokenEndpointError,
            data=params,
            auth=auth,
        )
        if status == 404 and self._settings.token_url is None:
            # The IdP moved its endpoint: discover again next time.
            self._token_url = None
        return parse_token_response(
            status,
            headers,
            body,
            endpoint=url,
            client_id=self._settings.client_id,
            token_exchange=token_exchange,
            received_mono=sent_mono,
            received_wall=sent_wall,
            default_lifetime=self._settings.default_lifetime,
        )

    async def _exchange(
        self, method: str, url: str, *, where: str, error_class: type[IdPError], **kwargs: Any
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Accept": "application/json"}
        try:
            # One deadline for the whole exchange: httpx2's timeouts are per read, and
            # a server dribbling a byte a second would otherwise hold us forever.
            async with asyncio.timeout(self._settings.timeout):
                async with self._client.stream(method, url, headers=headers, **kwargs) as resp:
                    body = await read_capped(resp)
                    return resp.status_code, dict(resp.headers), body
        except _TooLarge:
            raise error_class(
                f"{where} answered more than {MAX_RESPONSE_BYTES} bytes; refusing to read it",
                error="response_too_large",
            ) from None
        except (TimeoutError, httpx2.TimeoutException) as exc:
            raise error_class(
                f"{where} did not answer within {self._settings.timeout:g} s", error="timeout"
            ) from exc
        except httpx2.ConnectError as exc:
            raise error_class(f"{where} is unreachable: {exc}", error="connect_error") from exc
        except httpx2.HTTPError as exc:
            raise error_class(
                f"{where} failed: {type(exc).__name__}: {exc}", error="transport_error"
            ) from exc
