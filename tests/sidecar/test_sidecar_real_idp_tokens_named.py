"""Several tokens from one sidecar against real identity providers (issue 17).

Two oidc-provider processes: the default token and "payments" are two audiences
(RFC 8707 resources) at the first, "partner" a client of the second. Every token is
refreshed again and again on its own; stopping the second IdP fails "partner" alone,
while the other two keep refreshing, and /readyz names "partner" only once its token
has actually expired.
"""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path

import pytest

from tests.support import wait_until_async
from token_refresher import Refreshers, Settings, StatusServer
from token_refresher.expiry import jwt_claims

pytestmark = pytest.mark.idp

PAYMENTS = "urn:token-refresher:payments"


# A bound on a wait (60 s), not on how long it took: a loaded machine is only slower.
wait_for = functools.partial(wait_until_async, timeout=60, every=0.1)


async def test_three_tokens_at_two_idps_refresh_on_their_own(oidc_provider, tmp_path: Path) -> None:
    first = oidc_provider(ttl=4, resources={PAYMENTS: "api:read"})
    second = oidc_provider(ttl=3)
    (tmp_path / "out").mkdir()
    (tmp_path / "first-secret").write_text(first.basic.client_secret)
    (tmp_path / "second-secret").write_text(second.post.client_secret)
    tokens = {
        "payments": {"resource": PAYMENTS},
        "partner": {
            "token_url": second.token_url,
            "client_id": "client-post",
            "client_auth": "client_secret_post",
            "client_secret_file": str(tmp_path / "second-secret"),
            "resource": second.resource,
        },
    }
    env = {
        "TOKEN_URL": first.token_url,
        "CLIENT_ID": "client-basic",
        "CLIENT_SECRET_FILE": str(tmp_path / "first-secret"),
        "RESOURCE": first.resource,
        "SCOPE": "api:read",
        "MIN_REFRESH_INTERVAL": "1",
        "FORMAT": "json",
        "OUTPUT": str(tmp_path / "out" / "token"),
        "LISTEN": "127.0.0.1:0",
        "TOKENS": json.dumps(tokens),
    }
    settings = Settings.from_env({f"TOKEN_REFRESHER_{k}": v for k, v in env.items()})
    async with Refreshers(settings) as refreshers:
        server = StatusServer(refreshers, "127.0.0.1", 0)
        each = refreshers.refreshers
        task = asyncio.create_task(refreshers.run())
        try:
            await wait_for(
                "three refreshes of every token",
                lambda: all(r.refresh_count >= 3 for r in each.values()),
            )
            assert all(r.consecutive_failures == 0 for r in each.values()), refreshers.status()
            assert server.respond("GET", "/readyz")[0] == 200
            claims = {
                name: jwt_claims(json.loads(r.settings.output.read_text())["access_token"])
                for name, r in each.items()
            }
            assert claims["default"] is not None
            assert claims["payments"] is not None
            assert claims["partner"] is not None
            assert claims["default"]["aud"] == first.resource
            assert claims["payments"]["aud"] == PAYMENTS
            assert claims["partner"]["iss"] == second.issuer
            assert claims["partner"]["client_id"] == "client-post"

            second.stop()
            before = {name: r.refresh_count for name, r in each.items()}
            await wait_for(
                "the first IdP's tokens refreshed twice more while the second is down",
                lambda: all(
                    each[n].refresh_count >= before[n] + 2 for n in ("default", "payments")
                ),
            )
            await wait_for("partner's token expired", lambda: each["partner"].state == "expired")
            status, _, body = server.respond("GET", "/readyz")
            assert (status, body) == (503, b"no valid token: partner (expired)\n")
            assert each["default"].consecutive_failures == 0
            assert each["payments"].consecutive_failures == 0
            last_error = refreshers.status()["tokens"]["partner"]["last_error"]  # type: ignore[index]
            assert last_error["error"] == "connect_error"
        finally:
            refreshers.stop()
            await task
