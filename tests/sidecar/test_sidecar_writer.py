"""The token file: atomic, with the configured mode, never half-written."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from token_refresher.errors import OutputError
from token_refresher.tokens import Token
from token_refresher.writer import TokenWriter, atomic_write, read_expiry, render

NOW = 1_800_000_000.0


def token(value: str = "tok-1", lifetime: float = 3600) -> Token:
    return Token(
        access_token=value,
        token_type="Bearer",
        lifetime=lifetime,
        lifetime_source="expires_in",
        received_mono=5.0,
        received_wall=NOW,
        scope="read write",
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".tmp-" in p.name]


def test_raw_format_is_the_token_alone_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "token"
    TokenWriter(path, "raw", 0o444).write(token(), now=NOW)
    assert path.read_bytes() == b"tok-1"


def test_json_format_has_type_expiry_and_scope(tmp_path: Path) -> None:
    path = tmp_path / "token"
    TokenWriter(path, "json", 0o444).write(token(), now=NOW + 600)
    assert json.loads(path.read_text()) == {
        "access_token": "tok-1",
        "token_type": "Bearer",
        "expires_at": "2027-01-15T09:00:00Z",
        "expires_in": 3000,
        "scope": "read write",
    }


def test_mode_is_applied_on_every_write_regardless_of_umask(tmp_path: Path) -> None:
    path = tmp_path / "token"
    old = os.umask(0o077)
    try:
        TokenWriter(path, "raw", 0o444).write(token(), now=NOW)
        assert mode(path) == 0o444
        TokenWriter(path, "raw", 0o440).write(token("tok-2"), now=NOW)
        assert mode(path) == 0o440
    finally:
        os.umask(old)


def test_replaces_a_file_someone_else_put_there(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("intruder")
    path.chmod(0o600)
    TokenWriter(path, "raw", 0o444).write(token(), now=NOW)
    assert (path.read_text(), mode(path)) == ("tok-1", 0o444)


def test_full_disk_leaves_the_previous_token_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "token"
    writer = TokenWriter(path, "raw", 0o444)
    writer.write(token("old-token"), now=NOW)

    real_write = os.write
    calls = 0

    def write_then_enospc(fd: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:  # half the data lands, then the disk is full
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", write_then_enospc)
    with pytest.raises(OutputError, match=r"cannot write .*token: no space left on the volume"):
        writer.write(token("new-token-that-does-not-fit"), now=NOW)
    monkeypatch.undo()
    assert path.read_text() == "old-token"
    assert leftovers(tmp_path) == []


def test_read_only_volume_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(OutputError, match="mounted read-only"):
        atomic_write(tmp_path / "token", b"x", 0o444)


def test_a_missing_directory_is_recreated(tmp_path: Path) -> None:
    path = tmp_path / "volume" / "token"
    TokenWriter(path, "raw", 0o444).write(token(), now=NOW)
    assert path.read_text() == "tok-1"


def test_a_missing_parent_directory_is_an_error_not_a_new_tree(tmp_path: Path) -> None:
    path = tmp_path / "not-mounted" / "volume" / "token"
    with pytest.raises(OutputError, match="is the volume mounted"):
        TokenWriter(path, "raw", 0o444).write(token(), now=NOW)
    assert not (tmp_path / "not-mounted").exists()


def test_a_directory_in_place_of_the_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "token").mkdir()
    with pytest.raises(OutputError, match="cannot write"):
        TokenWriter(tmp_path / "token", "raw", 0o444).write(token(), now=NOW)
    assert leftovers(tmp_path) == []


def test_remove_is_idempotent(tmp_path: Path) -> None:
    writer = TokenWriter(tmp_path / "token", "raw", 0o444)
    writer.write(token(), now=NOW)
    writer.remove()
    writer.remove()
    assert not (tmp_path / "token").exists()


def test_expiry_of_a_previous_runs_file_is_read_back(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(render(token(), "json", now=NOW))
    assert read_expiry(path, "json") == NOW + 3600
    path.write_text("opaque")
    assert read_expiry(path, "raw") is None
