"""Settings from environment variables: the rules users rely on, whoever reads the env."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from token_refresher.settings import Settings, config_errors

BASE = {
    "TOKEN_REFRESHER_TOKEN_URL": "https://idp.example/token",
    "TOKEN_REFRESHER_CLIENT_ID": "billing",
    "TOKEN_REFRESHER_CLIENT_AUTH": "none",
}


def test_names_are_case_insensitive() -> None:
    settings = Settings.from_env(
        {**BASE, "token_refresher_scope": "a b", "Token_Refresher_Jitter": "0"}
    )
    assert settings.scope == "a b"
    assert settings.jitter == 0.0


def test_other_variables_are_ignored() -> None:
    settings = Settings.from_env(
        {**BASE, "TOKEN_REFRESHER_NO_SUCH_SETTING": "x", "TOKEN_REFRESHER_": "y", "SCOPE": "z"}
    )
    assert settings.scope is None


def test_values_are_converted_from_text() -> None:
    settings = Settings.from_env(
        {**BASE, "TOKEN_REFRESHER_REFRESH_RATIO": "0.5", "TOKEN_REFRESHER_FILE_MODE": "0440"}
    )
    assert settings.refresh_ratio == 0.5
    assert settings.file_mode == 0o440


def test_without_a_mapping_the_process_environment_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TOKEN_REFRESHER_SCOPE", "from-the-process")
    assert Settings.from_env().scope == "from-the-process"


def test_an_explicit_mapping_ignores_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOKEN_REFRESHER_SCOPE", "from-the-process")
    assert Settings.from_env(BASE).scope is None


def test_a_wrong_value_names_its_variable() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.from_env({**BASE, "token_refresher_refresh_ratio": "1.5"})
    assert config_errors(caught.value) == [
        "TOKEN_REFRESHER_REFRESH_RATIO: Input should be less than 1"
    ]
