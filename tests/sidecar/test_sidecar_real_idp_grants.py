"""The grants that need a cluster, against real IdPs: refresh-token rotation and RFC 8693
token exchange with Dex, and RFC 7523 jwt-bearer with oidc-provider.

The subject tokens and assertions are real projected service-account tokens minted by
the test kube-apiserver (TokenRequest), the same kind the kubelet writes into a pod; the
IdPs verify them against that apiserver's service-account issuer. Nothing is faked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.controlplane import ControlPlane
from tests.idp import (
    AWKWARD_CLIENT_ID,
    AWKWARD_CLIENT_SECRET,
    DEX_GRANTS,
    Dex,
    DexFactory,
    OAuthClient,
    OidcProvider,
    OidcProviderFactory,
    kubernetes_connector,
    kubernetes_trust,
)
from token_refresher import Refresher, Settings
from token_refresher.expiry import jwt_claims

pytestmark = [pytest.mark.cluster, pytest.mark.idp]


def _settings(tmp_path: Path, **env: str) -> Settings:
    (tmp_path / "out").mkdir(exist_ok=True)
    base = {"OUTPUT": str(tmp_path / "out" / "token"), "LISTEN": "127.0.0.1:0"}
    return Settings.from_env({f"TOKEN_REFRESHER_{k.upper()}": v for k, v in (base | env).items()})


def _service_account_token(cluster: ControlPlane, tmp_path: Path, audience: str) -> Path:
    """A projected-style token of a real ServiceAccount, as the kubelet would write it."""
    namespace = f"grants-{tmp_path.name[-12:].lower().replace('_', '-')}".rstrip("-")
    cluster.kubectl("create", "namespace", namespace, check=False)
    cluster.kubectl("-n", namespace, "create", "serviceaccount", "workload", check=False)
    token = cluster.kubectl(
        "-n", namespace, "create", "token", "workload", f"--audience={audience}"
    ).stdout.strip()
    path = tmp_path / "sa-token"
    path.write_text(token)
    return path


def _secret(tmp_path: Path, value: str) -> str:
    path = tmp_path / "client-secret"
    path.write_text(value)
    return str(path)


def _jwt_bearer(
    cluster: ControlPlane,
    oidc_provider: OidcProviderFactory,
    tmp_path: Path,
    *,
    audience: Callable[[OidcProvider], str],
    **env: str,
) -> tuple[OidcProvider, Path, Settings]:
    """oidc-provider trusting the cluster's issuer, a service-account token for
    `audience(idp)`, and jwt_bearer settings presenting it as client-basic."""
    idp = oidc_provider.start(ttl=60, trusted_issuers=[kubernetes_trust(cluster)])
    client = idp.basic
    assertion = _service_account_token(cluster, tmp_path, audience=audience(idp))
    settings = _settings(
        tmp_path,
        issuer=idp.issuer,
        grant="jwt_bearer",
        client_id=client.client_id,
        client_secret_file=_secret(tmp_path, client.client_secret or ""),
        service_account_token_file=str(assertion),
        resource=idp.resource,
        **env,
    )
    return idp, assertion, settings


def _dex_refresh_settings(dex: Dex, client: OAuthClient, tmp_path: Path) -> Settings:
    """A sidecar on the refresh_token grant at `dex` as `client`, bootstrapped with a
    refresh token from Dex's password grant."""
    bootstrap = tmp_path / "bootstrap"
    bootstrap.write_text(dex.refresh_token(client))
    return _settings(
        tmp_path,
        issuer=dex.issuer,
        grant="refresh_token",
        client_id=client.client_id,
        client_secret_file=_secret(tmp_path, client.client_secret or ""),
        refresh_token_file=str(bootstrap),
        scope="openid offline_access",
    )


async def test_refresh_token_rotation_with_dex(dex_factory: DexFactory, tmp_path: Path) -> None:
    dex = dex_factory()
    client = dex.basic
    settings = _dex_refresh_settings(dex, client, tmp_path)
    seen = [(tmp_path / "bootstrap").read_text()]
    async with Refresher(settings) as refresher:
        for _ in range(3):
            assert await refresher.refresh(), refresher.status()["last_error"]
            seen.append(json.loads(settings.effective_state_file.read_text())["refresh_token"])
    assert len(set(seen)) == 4, "Dex rotates the refresh token on every use"
    assert settings.effective_state_file.stat().st_mode & 0o777 == 0o600
    # A restarted container carries on from the state file: Dex refuses used tokens, so
    # this only succeeds with the newest one.
    async with Refresher(settings) as refresher:
        assert await refresher.refresh(), refresher.status()["last_error"]
    claims = jwt_claims(settings.output.read_text())
    assert claims is not None
    assert claims["aud"] == client.client_id


async def test_dex_accepts_a_client_secret_with_special_characters(
    dex_factory: DexFactory, tmp_path: Path
) -> None:
    # Dex form-decodes the client_secret_basic id and secret (RFC 6749 section 2.3.1), as
    # oidc-provider does (test_sidecar_real_idp): a `+` sent raw would arrive as a space.
    awkward = OAuthClient(
        AWKWARD_CLIENT_ID, "client_secret_basic", AWKWARD_CLIENT_SECRET, DEX_GRANTS
    )
    dex = dex_factory(clients=[awkward])
    settings = _dex_refresh_settings(dex, awkward, tmp_path)
    async with Refresher(settings) as refresher:
        assert await refresher.refresh(), refresher.status()["last_error"]
    claims = jwt_claims(settings.output.read_text())
    assert claims is not None
    assert claims["aud"] == awkward.client_id


async def test_token_exchange_of_a_service_account_token_with_dex(
    cluster: ControlPlane, dex_factory: DexFactory, tmp_path: Path
) -> None:
    dex = dex_factory(extra_connectors=[kubernetes_connector(cluster.sa_issuer, cluster.ca_file)])
    client = dex.basic
    subject = _service_account_token(cluster, tmp_path, audience="dex")
    settings = _settings(
        tmp_path,
        issuer=dex.issuer,
        grant="token_exchange",
        client_id=client.client_id,
        client_secret_file=_secret(tmp_path, client.client_secret or ""),
        service_account_token_file=str(subject),
        subject_token_type="urn:ietf:params:oauth:token-type:id_token",
        token_params="connector_id=kubernetes",
        scope="openid",
    )
    async with Refresher(settings) as refresher:
        assert await refresher.refresh(), refresher.status()["last_error"]
    claims = jwt_claims(settings.output.read_text())
    assert claims is not None
    assert claims["iss"] == dex.issuer
    assert claims["aud"] == client.client_id


async def test_jwt_bearer_with_a_service_account_token_at_oidc_provider(
    cluster: ControlPlane, oidc_provider: OidcProviderFactory, tmp_path: Path
) -> None:
    idp, _, settings = _jwt_bearer(
        cluster, oidc_provider, tmp_path, audience=lambda idp: idp.issuer, scope="api:read"
    )
    async with Refresher(settings) as refresher:
        assert await refresher.refresh(), refresher.status()["last_error"]
    claims = jwt_claims(settings.output.read_text())
    assert claims is not None
    assert claims["aud"] == idp.resource
    assert claims["sub"].startswith("system:serviceaccount:")


async def test_jwt_bearer_with_the_wrong_audience_is_refused_and_keeps_nothing(
    cluster: ControlPlane, oidc_provider: OidcProviderFactory, tmp_path: Path
) -> None:
    _, assertion, settings = _jwt_bearer(
        cluster, oidc_provider, tmp_path, audience=lambda idp: "someone-else"
    )
    async with Refresher(settings) as refresher:
        assert not await refresher.refresh()
        status = refresher.status()
    assert status["last_error"]["error"] == "invalid_grant"
    assert assertion.read_text() not in json.dumps(status)
    assert not settings.output.exists()
