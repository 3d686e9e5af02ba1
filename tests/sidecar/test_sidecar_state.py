"""Refresh-token rotation: persisted before use, preferred over the bootstrap on restart."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.support.fakes import FakeIdP
from token_refresher import Refresher
from token_refresher.state import RefreshTokenStore


def files(tmp_path: Path, bootstrap: str = "RT-bootstrap") -> tuple[Path, Path]:
    boot = tmp_path / "refresh-token"
    boot.write_text(bootstrap)
    return tmp_path / ".token.state", boot


def test_first_start_uses_the_bootstrap_file(tmp_path: Path) -> None:
    state, boot = files(tmp_path)
    assert RefreshTokenStore(state, boot).load() == "RT-bootstrap"


def test_a_rotated_token_is_saved_with_mode_0600(tmp_path: Path) -> None:
    state, boot = files(tmp_path)
    store = RefreshTokenStore(state, boot)
    store.load()
    store.save("RT-2")
    assert json.loads(state.read_text())["refresh_token"] == "RT-2"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600


def test_restart_prefers_the_state_file_over_the_bootstrap(tmp_path: Path) -> None:
    state, boot = files(tmp_path)
    first = RefreshTokenStore(state, boot)
    first.load()
    first.save("RT-2")
    assert RefreshTokenStore(state, boot).load() == "RT-2"


def test_a_new_bootstrap_token_put_in_place_by_a_person_wins(tmp_path: Path) -> None:
    state, boot = files(tmp_path)
    first = RefreshTokenStore(state, boot)
    first.load()
    first.save("RT-2")
    boot.write_text("RT-fresh-from-the-user")
    assert RefreshTokenStore(state, boot).load() == "RT-fresh-from-the-user"


def test_a_rejected_token_is_not_replayed_after_restart(tmp_path: Path) -> None:
    state, boot = files(tmp_path)
    store = RefreshTokenStore(state, boot)
    store.load()
    store.discard()
    assert RefreshTokenStore(state, boot).load() is None


async def test_rotation_is_written_before_the_next_refresh_uses_it(
    make_settings, idp: FakeIdP, clock, tmp_path: Path, half
) -> None:
    _, boot = files(tmp_path)
    settings = make_settings(grant="refresh_token", refresh_token_file=boot)
    idp.reply(idp.token(refresh_token="RT-2"), idp.token(), idp.token(refresh_token="RT-3"))
    async with Refresher(settings, transport=idp.transport, clock=clock, random=half) as r:
        assert await r.refresh()
        state = json.loads(settings.effective_state_file.read_text())
        assert state["refresh_token"] == "RT-2"
        assert await r.refresh()  # answer without refresh_token: keep RT-2
        assert await r.refresh()
    sent = [seen.form["refresh_token"] for seen in idp.posts]
    assert sent == ["RT-bootstrap", "RT-2", "RT-2"]
    assert all(seen.form["grant_type"] == "refresh_token" for seen in idp.posts)
    assert json.loads(settings.effective_state_file.read_text())["refresh_token"] == "RT-3"


async def test_a_restarted_sidecar_continues_with_the_rotated_token(
    make_settings, idp: FakeIdP, clock, tmp_path: Path, half
) -> None:
    _, boot = files(tmp_path)
    settings = make_settings(grant="refresh_token", refresh_token_file=boot)
    idp.reply(idp.token(refresh_token="RT-2"))
    async with Refresher(settings, transport=idp.transport, clock=clock, random=half) as r:
        assert await r.refresh()
    async with Refresher(settings, transport=idp.transport, clock=clock, random=half) as r:
        assert await r.refresh()
    assert [seen.form["refresh_token"] for seen in idp.posts] == ["RT-bootstrap", "RT-2"]
