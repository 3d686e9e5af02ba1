"""private_key_jwt against a real IdP that holds two keys for the client, as it does
during every key rotation.

oidc-provider selects the verification key by the assertion's `kid` when there is one
(only keys registered under that kid are tried), so a token issued here shows the kid
named the sidecar's key. Without a kid it tries every key of the client in turn, so it
would accept a kid-less assertion too; Keycloak does not ("Signature on JWT token failed
validation"), which is why the header is checked here as well as the token. The
assertions are read off the wire by a recording pass-through transport: nothing is faked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.idp import OAuthClient
from token_refresher import Refresher, Settings
from token_refresher.grants import ASSERTION_LIFETIME

pytestmark = pytest.mark.idp


class Recording(httpx2.AsyncBaseTransport):
    """Passes every request to the real network, keeping the forms sent."""

    def __init__(self) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self.forms: list[dict[str, str]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST":
            self.forms.append(dict(parse_qsl((await request.aread()).decode())))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def rsa_jwk(kid: str | None = None) -> dict[str, Any]:
    """A private RSA JWK under `kid` (default: its own RFC 7638 thumbprint)."""
    key = RSAKey.generate_key(2048)
    return {**key.as_dict(private=True), "kid": kid or key.thumbprint(), "alg": "RS256"}


@pytest.mark.parametrize("configured_kid", [None, "billing-2026-11"], ids=["thumbprint", "set"])
async def test_private_key_jwt_names_its_key_among_two(
    oidc_provider, tmp_path: Path, configured_kid: str | None
) -> None:
    other = RSAKey.import_key(rsa_jwk("billing-2026-05")).as_dict(private=False)
    client = OAuthClient(
        "client-rotating",
        "private_key_jwt",
        private_jwk=rsa_jwk(configured_kid),
        other_public_jwks=(other,),
    )
    assert client.private_jwk is not None
    assert len(client.public_jwks["keys"]) == 2
    idp = oidc_provider(ttl=60, clients=[client])
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(client.private_key_pem())
    env = {
        "TOKEN_URL": idp.token_url,
        "CLIENT_ID": client.client_id,
        "PRIVATE_KEY_FILE": str(key_file),
        "RESOURCE": idp.resource,
        "OUTPUT": str(tmp_path / "token"),
    }
    if configured_kid is not None:
        env["PRIVATE_KEY_ID"] = configured_kid
    settings = Settings.from_env({f"TOKEN_REFRESHER_{k}": v for k, v in env.items()})
    wire = Recording()
    async with Refresher(settings, transport=wire) as refresher:
        assert await refresher.refresh(), refresher.status()["last_error"]
        assert await refresher.refresh(), refresher.status()["last_error"]
    assert settings.output.read_text()

    public = RSAKey.import_key(dict(client.private_jwk))
    sent = [jwt.decode(form["client_assertion"], public) for form in wire.forms]
    assert len(sent) == 2
    expected_kid = configured_kid or public.thumbprint()
    assert [token.header["kid"] for token in sent] == [expected_kid, expected_kid]
    assert [t.claims["exp"] - t.claims["iat"] for t in sent] == [ASSERTION_LIFETIME] * 2
    assert sent[0].claims["jti"] != sent[1].claims["jti"]
