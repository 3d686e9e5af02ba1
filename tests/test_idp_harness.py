"""Smoke tests of the real test IdPs: they issue the tokens the rest of the suite relies on.

Plain httpx2 against the token endpoints, no code of ours in between: client_credentials
with every client authentication method, the configured lifetimes, refresh-token rotation,
restart as an outage, and Dex's password grant and token exchange.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.controlplane import ControlPlane
from tests.idp import (
    JWT_BEARER,
    Dex,
    DexFactory,
    IdPHarnessError,
    OAuthClient,
    OidcProvider,
    OidcProviderFactory,
    kubernetes_connector,
    kubernetes_trust,
)

pytestmark = pytest.mark.idp


def _claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _verified_claims(token: str, jwks_url: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(httpx2.get(jwks_url, timeout=10).json())
    return dict(jwt.decode(token, keys).claims)


@pytest.fixture
def service_account(cluster: ControlPlane) -> Iterator[tuple[str, str]]:
    """(namespace, name) of a fresh ServiceAccount in the test cluster."""
    ns = f"idp-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("-n", ns, "create", "serviceaccount", "app")
    yield ns, "app"
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _sa_token(cluster: ControlPlane, service_account: tuple[str, str], audience: str) -> str:
    ns, name = service_account
    out = cluster.kubectl("-n", ns, "create", "token", name, f"--audience={audience}").stdout
    return out.strip()


def _token(idp: OidcProvider | Dex, client: OAuthClient, **params: str) -> httpx2.Response:
    return httpx2.post(idp.token_url, timeout=10, **client.token_request(idp.token_url, **params))


# --- oidc-provider -------------------------------------------------------------------------


@pytest.mark.parametrize("client_id", ["client-basic", "client-post", "client-jwt"])
def test_client_credentials_with_each_client_auth_method(
    oidc_provider: OidcProviderFactory, client_id: str
) -> None:
    idp = oidc_provider(ttl=5)
    client = idp.clients[client_id]
    resp = _token(idp, client, grant_type="client_credentials", scope="api:read")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "api:read"
    claims = _verified_claims(body["access_token"], idp.jwks_url)
    assert claims["iss"] == idp.issuer
    assert claims["client_id"] == client_id
    assert claims["aud"] == idp.resource


def test_discovery_names_the_token_endpoint_and_auth_methods(
    oidc_provider: OidcProviderFactory,
) -> None:
    idp = oidc_provider()
    doc = httpx2.get(idp.discovery_url, timeout=10).json()
    assert doc["issuer"] == idp.issuer
    assert doc["token_endpoint"] == idp.token_url
    assert {"client_secret_basic", "client_secret_post", "private_key_jwt", "none"} <= set(
        doc["token_endpoint_auth_methods_supported"]
    )
    assert {"client_credentials", "refresh_token", "password"} <= set(doc["grant_types_supported"])


def test_client_credentials_token_lives_the_configured_ttl(
    oidc_provider: OidcProviderFactory,
) -> None:
    idp = oidc_provider(ttl=7)
    body = _token(idp, idp.basic, grant_type="client_credentials").json()
    assert body["expires_in"] == 7
    claims = _claims(body["access_token"])
    assert claims["exp"] - claims["iat"] == 7


def test_opaque_access_tokens_when_asked(oidc_provider: OidcProviderFactory) -> None:
    idp = oidc_provider(access_token_format="opaque")
    body = _token(idp, idp.basic, grant_type="client_credentials").json()
    assert body["access_token"].count(".") == 0


def test_wrong_client_secret_is_invalid_client(oidc_provider: OidcProviderFactory) -> None:
    idp = oidc_provider()
    wrong = OAuthClient("client-basic", "client_secret_basic", "not-the-secret")
    resp = _token(idp, wrong, grant_type="client_credentials")
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"


def test_a_client_assertion_is_accepted_only_once(oidc_provider: OidcProviderFactory) -> None:
    idp = oidc_provider()
    kwargs = idp.private_key_jwt.token_request(idp.token_url, grant_type="client_credentials")
    assert httpx2.post(idp.token_url, timeout=10, **kwargs).status_code == 200
    again = httpx2.post(idp.token_url, timeout=10, **kwargs)
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_client"


@pytest.mark.parametrize("client_id", ["client-basic", "client-public"])
def test_refresh_rotates_the_refresh_token_and_refuses_the_old_one(
    oidc_provider: OidcProviderFactory, client_id: str
) -> None:
    idp = oidc_provider(ttl=5)
    client = idp.clients[client_id]
    first = idp.password_grant(client)
    assert first["expires_in"] == 5
    old = first["refresh_token"]

    refreshed = _token(idp, client, grant_type="refresh_token", refresh_token=old)
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.json()
    assert body["refresh_token"] != old
    assert body["expires_in"] == 5
    assert _verified_claims(body["access_token"], idp.jwks_url)["sub"] == "alice"

    replay = _token(idp, client, grant_type="refresh_token", refresh_token=old)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"


def test_replaying_a_rotated_refresh_token_revokes_the_newest_one_too(
    oidc_provider: OidcProviderFactory,
) -> None:
    # RFC 9700 section 4.14.2: reuse of a rotated refresh token means it leaked, so the
    # whole grant goes. A client that retries with the old token after losing a response
    # loses its grant: the sidecar must persist the new token before anything else.
    idp = oidc_provider()
    old = idp.refresh_token()
    new = _token(idp, idp.basic, grant_type="refresh_token", refresh_token=old).json()
    _token(idp, idp.basic, grant_type="refresh_token", refresh_token=old)
    after = _token(idp, idp.basic, grant_type="refresh_token", refresh_token=new["refresh_token"])
    assert after.status_code == 400
    assert after.json()["error"] == "invalid_grant"


def test_no_refresh_token_without_offline_access(oidc_provider: OidcProviderFactory) -> None:
    idp = oidc_provider()
    assert "refresh_token" not in idp.password_grant(scope="openid api:read")


def test_restart_on_the_same_port_is_an_outage_not_a_new_idp(
    oidc_provider: OidcProviderFactory,
) -> None:
    idp = oidc_provider()
    issuer, refresh_token = idp.issuer, idp.refresh_token()
    idp.stop()
    with pytest.raises(httpx2.ConnectError):
        _token(idp, idp.basic, grant_type="client_credentials")

    idp.restart()
    assert idp.issuer == issuer
    resp = _token(idp, idp.basic, grant_type="refresh_token", refresh_token=refresh_token)
    assert resp.status_code == 200, resp.text
    assert _verified_claims(resp.json()["access_token"], idp.jwks_url)["iss"] == issuer


def test_restart_with_a_rotated_secret_rejects_the_old_one(
    oidc_provider: OidcProviderFactory,
) -> None:
    idp = oidc_provider()
    old = idp.basic
    rotated = OAuthClient(old.client_id, old.auth_method, "rotated-secret", old.grant_types)
    idp.restart(clients=[rotated, idp.post])
    assert _token(idp, old, grant_type="client_credentials").json()["error"] == "invalid_client"
    assert _token(idp, rotated, grant_type="client_credentials").status_code == 200


def test_stop_leaves_no_process_behind(oidc_provider: OidcProviderFactory) -> None:
    idp = oidc_provider()
    pgid = idp.pid
    assert pgid is not None
    idp.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


def test_a_failed_start_says_what_it_waited_for_and_shows_stderr(
    oidc_provider: OidcProviderFactory,
) -> None:
    busy = oidc_provider()
    with pytest.raises(IdPHarnessError, match=r"(?s)ready line.*EADDRINUSE"):
        oidc_provider(port=busy.port)


# --- Dex -----------------------------------------------------------------------------------


@pytest.mark.parametrize("client_id", ["dex-basic", "dex-post", "dex-public"])
def test_dex_password_grant_with_offline_access_returns_a_refresh_token(
    dex_factory: DexFactory, client_id: str
) -> None:
    dex = dex_factory(id_token_ttl=10)
    body = dex.password_grant(dex.clients[client_id])
    assert body["refresh_token"]
    assert body["token_type"] == "bearer"
    assert 8 <= body["expires_in"] <= 10  # Dex truncates the seconds it reports
    claims = _verified_claims(body["access_token"], f"{dex.issuer}/keys")
    assert claims["iss"] == dex.issuer
    assert claims["aud"] == client_id
    assert claims["exp"] - claims["iat"] == 10


def test_dex_refresh_rotates_the_refresh_token_and_refuses_the_old_one(
    dex_factory: DexFactory,
) -> None:
    dex = dex_factory()
    old = dex.refresh_token()
    refreshed = _token(dex, dex.basic, grant_type="refresh_token", refresh_token=old)
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] not in ("", old)

    # Dex answers a claimed refresh token with invalid_request, not RFC 6749's
    # invalid_grant (server/refreshhandlers.go): both mean "this grant is dead".
    replay = _token(dex, dex.basic, grant_type="refresh_token", refresh_token=old)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_request"


def test_dex_has_no_client_credentials_grant(dex_factory: DexFactory) -> None:
    # Dex v2.41.1 predates its client_credentials support: the sidecar's client_credentials
    # tests run against oidc-provider.
    dex = dex_factory()
    resp = _token(dex, dex.basic, grant_type="client_credentials")
    assert resp.status_code == 400
    assert resp.json()["error"] == "unsupported_grant_type"


@pytest.mark.cluster
def test_dex_exchanges_a_service_account_token(
    cluster: ControlPlane, service_account: tuple[str, str], dex_factory: DexFactory
) -> None:
    connector = kubernetes_connector(cluster.sa_issuer, cluster.ca_file)
    dex = dex_factory(extra_connectors=[connector])
    subject = _sa_token(cluster, service_account, audience="dex")
    body = dex.token_exchange(subject, connector_id="kubernetes")
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert "refresh_token" not in body
    claims = _verified_claims(body["access_token"], f"{dex.issuer}/keys")
    assert claims["iss"] == dex.issuer
    assert claims["aud"] == dex.basic.client_id


# --- oidc-provider with the cluster's service-account issuer -------------------------------


@pytest.mark.cluster
def test_jwt_bearer_grant_accepts_a_service_account_token(
    cluster: ControlPlane, service_account: tuple[str, str], oidc_provider: OidcProviderFactory
) -> None:
    idp = oidc_provider(trusted_issuers=[kubernetes_trust(cluster)])
    body = idp.jwt_bearer(_sa_token(cluster, service_account, audience=idp.issuer))
    assert "refresh_token" not in body
    claims = _verified_claims(body["access_token"], idp.jwks_url)
    assert claims["sub"] == "system:serviceaccount:{}:{}".format(*service_account)
    assert claims["client_id"] == idp.basic.client_id


@pytest.mark.cluster
def test_jwt_bearer_grant_refuses_a_token_for_another_audience(
    cluster: ControlPlane, service_account: tuple[str, str], oidc_provider: OidcProviderFactory
) -> None:
    idp = oidc_provider(trusted_issuers=[kubernetes_trust(cluster)])
    assertion = _sa_token(cluster, service_account, audience="someone-else")
    resp = _token(idp, idp.basic, grant_type=JWT_BEARER, assertion=assertion)
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"
