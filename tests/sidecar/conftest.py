"""Fixtures for the sidecar's unit and fault tests: the fakes of `sidecar_fakes`, and
settings built from an explicit env (never the caller's environment).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fakes import CLIENT_SECRET, TOKEN_URL, FakeClock, FakeIdP
from token_refresher import Settings
from token_refresher.redact import redactor


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def idp(clock: FakeClock) -> FakeIdP:
    return FakeIdP(clock)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "creds" / "client-secret"
    path.parent.mkdir()
    path.write_text(CLIENT_SECRET + "\n")
    return path


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path, secret_file: Path) -> SettingsFactory:
    """Settings from defaults suited to tests plus `NAME=value` overrides (no prefix)."""

    def make(**overrides: Any) -> Settings:
        env = {
            "TOKEN_URL": TOKEN_URL,
            "CLIENT_ID": "billing",
            "CLIENT_SECRET_FILE": str(secret_file),
            "OUTPUT": str(tmp_path / "out" / "token"),
            "LISTEN": "127.0.0.1:0",
        }
        env.update({k.upper(): str(v) for k, v in overrides.items() if v is not None})
        for key in [k for k, v in overrides.items() if v is None]:
            env.pop(key.upper(), None)
        return Settings.from_env({f"TOKEN_REFRESHER_{k}": v for k, v in env.items()})

    (tmp_path / "out").mkdir()
    return make


@pytest.fixture(autouse=True)
def _fresh_redactor() -> Iterator[None]:
    # The redactor is process-wide; a test must not pass because an earlier one
    # happened to register its secret.
    saved = list(redactor._secrets)
    redactor._secrets.clear()
    yield
    redactor._secrets.clear()
    redactor._secrets.extend(saved)


@pytest.fixture
def half() -> Callable[[], float]:
    """A 'random' that always draws the middle: no jitter, reproducible delays."""
    return lambda: 0.5
