"""TOKEN_PARAMS and SUBJECT_TOKEN_TYPE: extra token-request fields, validated up front."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from token_refresher.grants import Credentials
from token_refresher.settings import Grant, Settings, config_errors

BASE = {
    "TOKEN_REFRESHER_TOKEN_URL": "https://idp.example/token",
    "TOKEN_REFRESHER_CLIENT_ID": "billing",
    "TOKEN_REFRESHER_CLIENT_AUTH": "none",
}


def test_token_params_are_added_to_the_request() -> None:
    settings = Settings.from_env(
        {**BASE, "TOKEN_REFRESHER_TOKEN_PARAMS": "connector_id=k8s&x=a%20b"}
    )
    params = Credentials(settings).grant_params(Grant.CLIENT_CREDENTIALS)
    assert params["connector_id"] == "k8s"
    assert params["x"] == "a b"
    assert params["grant_type"] == "client_credentials"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("grant_type=password", "must not set grant_type"),
        ("client_secret=x&a=b", "must not set client_secret"),
        ("no-equals-sign", "must be URL-encoded name=value pairs"),
    ],
)
def test_token_params_that_would_override_the_grant_are_refused(value: str, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Settings.from_env({**BASE, "TOKEN_REFRESHER_TOKEN_PARAMS": value})
    [line] = config_errors(exc.value)
    assert line.startswith("TOKEN_REFRESHER_TOKEN_PARAMS: ")
    assert message in line
    assert value not in line  # never echo a value: it could hold a secret


def test_subject_token_type_defaults_to_jwt_and_can_be_changed(tmp_path) -> None:
    token = tmp_path / "sa"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    env = {
        **BASE,
        "TOKEN_REFRESHER_GRANT": "token_exchange",
        "TOKEN_REFRESHER_SERVICE_ACCOUNT_TOKEN_FILE": str(token),
    }
    default = Credentials(Settings.from_env(env)).grant_params(Grant.TOKEN_EXCHANGE)
    assert default["subject_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    dex = Settings.from_env(
        {**env, "TOKEN_REFRESHER_SUBJECT_TOKEN_TYPE": "urn:ietf:params:oauth:token-type:id_token"}
    )
    assert (
        Credentials(dex).grant_params(Grant.TOKEN_EXCHANGE)["subject_token_type"]
        == "urn:ietf:params:oauth:token-type:id_token"
    )
