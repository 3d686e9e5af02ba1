"""The happy path against a real identity provider (oidc-provider, a certified OP).

Fakes elsewhere inject faults; here nothing is faked: discovery, every client
authentication method oidc-provider speaks, short-lived tokens, and refresh-token
rotation across a restart (oidc-provider revokes the whole grant if a used refresh
token is ever replayed, so a sidecar that forgot a rotation fails loudly here).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.idp import AWKWARD_CLIENT_ID, AWKWARD_CLIENT_SECRET
from token_refresher import Refresher, Settings
from token_refresher.expiry import jwt_claims

pytestmark = pytest.mark.idp


def settings_for(tmp_path: Path, **env: str) -> Settings:
    (tmp_path / "out").mkdir(exist_ok=True)
    base = {"OUTPUT": str(tmp_path / "out" / "token"), "LISTEN": "127.0.0.1:0"}
    return Settings.from_env({f"TOKEN_REFRESHER_{k.upper()}": v for k, v in (base | env).items()})


@pytest.mark.parametrize("client_id", ["client-basic", "client-post", "client-jwt"])
async def test_client_credentials_through_discovery(
    oidc_provider, tmp_path: Path, client_id: str
) -> None:
    idp = oidc_provider(ttl=60)
    client = idp.clients[client_id]
    env = {
        "issuer": idp.issuer,
        "client_id": client_id,
        "client_auth": client.auth_method,
        "resource": idp.resource,
        "scope": "api:read",
    }
    if client.client_secret:
        (tmp_path / "secret").write_text(client.client_secret)
        env["client_secret_file"] = str(tmp_path / "secret")
    else:
        (tmp_path / "key.pem").write_bytes(client.private_key_pem())
        env["private_key_file"] = str(tmp_path / "key.pem")
        # oidc-provider picks the key by the assertion's kid: the one it was registered under.
        env["private_key_id"] = client.private_jwk["kid"]
    settings = settings_for(tmp_path, **env)
    async with Refresher(settings) as refresher:
        assert await refresher.refresh(), refresher.status()["last_error"]
        status = refresher.status()
    claims = jwt_claims(settings.output.read_text())
    assert claims is not None
    assert claims["aud"] == idp.resource
    assert status["token_endpoint"] == idp.token_url
    # expires_in 60, the first token of the process: its start-up window, 0.25..0.8 of it
    assert 14 < refresher.next_refresh_in <= 48


async def test_short_lived_tokens_are_refreshed_before_they_expire(
    oidc_provider, tmp_path: Path
) -> None:
    idp = oidc_provider(ttl=3)
    (tmp_path / "secret").write_text(idp.basic.client_secret)
    settings = settings_for(
        tmp_path,
        token_url=idp.token_url,
        client_id="client-basic",
        client_secret_file=str(tmp_path / "secret"),
        resource=idp.resource,
        min_refresh_interval="1",
        format="json",
    )
    async with Refresher(settings) as refresher:
        task = asyncio.create_task(refresher.run())
        async with asyncio.timeout(15):
            while refresher.refresh_count < 3:
                await asyncio.sleep(0.1)
                assert refresher.consecutive_failures == 0, refresher.status()
        refresher.stop()
        await task
    document = json.loads(settings.output.read_text())
    assert document["token_type"] == "Bearer"
    assert 0 < document["expires_in"] <= 3


async def test_refresh_token_rotation_survives_a_restart(oidc_provider, tmp_path: Path) -> None:
    idp = oidc_provider(ttl=60)
    bootstrap = tmp_path / "refresh-token"
    bootstrap.write_text(idp.refresh_token(idp.clients["client-public"]))
    settings = settings_for(
        tmp_path,
        issuer=idp.issuer,
        grant="refresh_token",
        client_id="client-public",
        client_auth="none",
        refresh_token_file=str(bootstrap),
    )
    async with Refresher(settings) as refresher:
        assert await refresher.refresh(), refresher.status()["last_error"]
        first = json.loads(settings.effective_state_file.read_text())["refresh_token"]
        assert await refresher.refresh(), refresher.status()["last_error"]
    second = json.loads(settings.effective_state_file.read_text())["refresh_token"]
    assert first != second
    # A restarted container: the state file wins over the (long used) bootstrap token.
    async with Refresher(settings) as refresher:
        assert await refresher.refresh(), refresher.status()["last_error"]
    assert json.loads(settings.effective_state_file.read_text())["refresh_token"] != second


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
async def test_a_secret_with_special_characters_is_accepted(
    oidc_provider, tmp_path: Path, auth_method: str
) -> None:
    from tests.idp import OAuthClient

    client = OAuthClient(AWKWARD_CLIENT_ID, auth_method, AWKWARD_CLIENT_SECRET)  # type: ignore[arg-type]
    idp = oidc_provider(ttl=60, clients=[client])
    (tmp_path / "secret").write_text(AWKWARD_CLIENT_SECRET)
    settings = settings_for(
        tmp_path,
        token_url=idp.token_url,
        client_id=AWKWARD_CLIENT_ID,
        client_auth=auth_method,
        client_secret_file=str(tmp_path / "secret"),
        resource=idp.resource,
    )
    async with Refresher(settings) as refresher:
        assert await refresher.refresh(), refresher.status()["last_error"]
    claims = jwt_claims(settings.output.read_text())
    assert claims is not None
    assert claims["client_id"] == AWKWARD_CLIENT_ID


async def test_a_grant_the_idp_does_not_offer_is_refused_with_what_it_offers(
    oidc_provider, tmp_path: Path
) -> None:
    # oidc-provider has no RFC 8693 token exchange: discovery does not list it, and the
    # refusal says so instead of leaving the reader with "unsupported_grant_type".
    idp = oidc_provider(ttl=60)
    (tmp_path / "secret").write_text(idp.basic.client_secret)
    (tmp_path / "sa-token").write_text("not-looked-at")
    settings = settings_for(
        tmp_path,
        issuer=idp.issuer,
        grant="token_exchange",
        client_id="client-basic",
        client_secret_file=str(tmp_path / "secret"),
        service_account_token_file=str(tmp_path / "sa-token"),
    )
    async with Refresher(settings) as refresher:
        assert not await refresher.refresh()
        last = refresher.status()["last_error"]
    assert last["error"] == "unsupported_grant_type"
    assert "discovery document lists grant_types_supported: " in last["message"]
    assert "client_credentials" in last["message"]
    assert last["message"].endswith("(not urn:ietf:params:oauth:grant-type:token-exchange)")
    assert not settings.output.exists()
