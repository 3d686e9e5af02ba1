"""Recovery after a permanent error: a fixed Secret is tried at once, else at growing
intervals up to PERMANENT_ERROR_INTERVAL, and /status says which.

The fake-clock tests check the timing exactly; the last test does it for real: the
client secret is rotated at oidc-provider and, the kubelet's way, in the Secret volume.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.idp import OAuthClient
from tests.support.fakes import CLIENT_SECRET, FakeClock, FakeIdP, SecretVolume, rotate, spin_until
from token_refresher import Refresher, Settings
from token_refresher.watch import POLL_INTERVAL, CredentialWatch

FIXED = "SECRET-CANARY-fixed-by-a-person"


def basic(secret: str) -> str:
    return "Basic " + base64.b64encode(f"billing:{secret}".encode()).decode()


@pytest.fixture
def volume(tmp_path: Path) -> SecretVolume:
    return SecretVolume(tmp_path / "secret-volume", **{"client-secret": CLIENT_SECRET})


async def fail_three_times_then_change(
    r: Refresher, idp: FakeIdP, clock: FakeClock, change: Callable[[], None]
) -> float:
    """Run the loop through three invalid_client answers, make `change` 5 s after the
    third, run until a token came; the monotonic instant of the change."""
    idp.reply(*[idp.error(401, "invalid_client")] * 3)
    task = asyncio.create_task(r.run())
    try:
        await spin_until(lambda: len(idp.posts) == 3 and clock.mono >= idp.posts[2].at + 5)
        change()
        changed_at = clock.mono
        await spin_until(lambda: r.refresh_count == 1)
    finally:
        r.stop()
        await task
    return changed_at


async def test_a_fixed_client_secret_is_tried_at_once(
    make_settings, idp, clock, half, volume
) -> None:
    settings = make_settings(client_secret_file=volume.path("client-secret"))
    async with Refresher(settings, transport=idp.transport, clock=clock, random=half) as r:
        changed_at = await fail_three_times_then_change(
            r, idp, clock, lambda: volume.update(**{"client-secret": FIXED})
        )
    first, second, third, retry = idp.posts
    assert (second.at - first.at, third.at - second.at) == (4.75, 9.5)  # the ladder
    # The next look after the change, not the ladder's 19 s after the third failure.
    assert changed_at <= retry.at <= changed_at + POLL_INTERVAL
    assert retry.headers["authorization"] == basic(FIXED)


async def test_a_new_refresh_token_is_tried_at_once(
    make_settings, idp, clock, half, tmp_path: Path
) -> None:
    bootstrap = tmp_path / "refresh-token"
    bootstrap.write_text("RT-dead")
    settings = make_settings(grant="refresh_token", refresh_token_file=bootstrap)
    async with Refresher(settings, transport=idp.transport, clock=clock, random=half) as r:
        # The IdP is asked once; after that the dead token is never replayed, and the
        # sidecar waits for a new one without asking.
        idp.reply(idp.error(400, "invalid_grant"))
        task = asyncio.create_task(r.run())
        try:
            await spin_until(lambda: r.consecutive_failures == 3)
            rotate(bootstrap, "RT-fresh")
            changed_at = clock.mono
            await spin_until(lambda: r.refresh_count == 1)
        finally:
            r.stop()
            await task
    assert [s.form["refresh_token"] for s in idp.posts] == ["RT-dead", "RT-fresh"]
    assert changed_at <= idp.posts[-1].at <= changed_at + POLL_INTERVAL


async def test_a_secret_swap_that_keeps_the_content_is_not_a_change(
    make_settings, idp, clock, half, volume
) -> None:
    # The kubelet swaps every key of a Secret when any one changes: no reason to retry.
    settings = make_settings(client_secret_file=volume.path("client-secret"))
    async with Refresher(settings, transport=idp.transport, clock=clock, random=half) as r:
        await fail_three_times_then_change(
            r, idp, clock, lambda: volume.update(**{"client-secret": CLIENT_SECRET})
        )
    assert [round(b.at - a.at, 6) for a, b in itertools.pairwise(idp.posts)] == [4.75, 9.5, 19.0]


async def test_status_says_what_the_retry_waits_for(make_settings, idp, clock, half) -> None:
    settings = make_settings(permanent_error_interval=300)
    idp.reply(*[idp.error(401, "invalid_client")] * 7)
    async with Refresher(settings, transport=idp.transport, clock=clock, random=half) as r:
        assert not await r.refresh()
        status = r.status()
        assert status["waiting"] == "waiting for a credential change or 5s"  # 4.75 s
        assert status["watched_files"] == [str(settings.client_secret_file)]
        for _ in range(6):
            assert not await r.refresh()
        assert r.status()["waiting"] == "waiting for a credential change or 4m45s"  # 300 s - 5 %
        assert await r.refresh()
        assert (r.status()["waiting"], r.status()["watched_files"]) == (None, [])


async def test_without_a_credential_file_the_status_shows_only_the_wait(
    make_settings, idp, clock, half
) -> None:
    settings = make_settings(client_secret_file=None, client_auth="none")
    idp.reply(idp.error(400, "unauthorized_client"))
    async with Refresher(settings, transport=idp.transport, clock=clock, random=half) as r:
        assert not await r.refresh()
        assert (r.status()["waiting"], r.status()["watched_files"]) == ("waiting 5s", [])


def test_the_watch_follows_the_kubelets_symlink_swap(volume: SecretVolume) -> None:
    path = volume.path("client-secret")
    watch = CredentialWatch([path])
    watch.snapshot()
    assert watch.changed() is None
    volume.update(**{"client-secret": CLIENT_SECRET})
    assert watch.changed() is None
    volume.update(**{"client-secret": FIXED})
    assert watch.changed() == path
    assert watch.changed() is None  # reported once


@pytest.mark.idp
async def test_a_secret_rotated_at_the_idp_and_in_the_volume_recovers_within_seconds(
    oidc_provider, tmp_path: Path, caplog
) -> None:
    old = OAuthClient("client-rotating", "client_secret_basic", "SECRET-CANARY-old")
    new = OAuthClient("client-rotating", "client_secret_basic", "SECRET-CANARY-new")
    idp = oidc_provider(ttl=60, clients=[old])
    volume = SecretVolume(tmp_path / "secret-volume", **{"client-secret": "SECRET-CANARY-old"})
    settings = Settings.from_env(
        {
            "TOKEN_REFRESHER_TOKEN_URL": idp.token_url,
            "TOKEN_REFRESHER_CLIENT_ID": old.client_id,
            "TOKEN_REFRESHER_CLIENT_SECRET_FILE": str(volume.path("client-secret")),
            "TOKEN_REFRESHER_RESOURCE": idp.resource,
            "TOKEN_REFRESHER_OUTPUT": str(tmp_path / "token"),
        }
    )
    async with Refresher(settings) as r:
        assert await r.refresh(), r.status()["last_error"]
        idp.restart(clients=[new])  # an administrator rotates the secret at the IdP
        for _ in range(4):  # up the ladder: the next attempt is 36..40 s away
            assert not await r.refresh()
        assert r.status()["last_error"]["error"] == "invalid_client"
        ladder = r.next_refresh_in
        assert ladder > 30
        assert r.status()["waiting"].startswith("waiting for a credential change or ")
        task = asyncio.create_task(r.run())
        try:
            # Let the loop settle into its wait and look at an unchanged file first.
            await asyncio.sleep(3 * POLL_INTERVAL)
            assert r.refresh_count == 1, r.status()
            with caplog.at_level(logging.INFO, logger="token_refresher"):
                volume.update(**{"client-secret": "SECRET-CANARY-new"})  # the Secret, fixed
                changed = time.monotonic()
                async with asyncio.timeout(ladder - 5):  # fails before the ladder could help
                    while r.refresh_count < 2:
                        await asyncio.sleep(0.05)
                        assert not task.done(), "the refresh loop ended"
                took = time.monotonic() - changed
        finally:
            r.stop()
            await task
    assert took < 5, f"the next token came {took:.1f} s after the Secret changed"
    assert r.consecutive_failures == 0
    assert any("changed after a permanent error" in rec.getMessage() for rec in caplog.records)
