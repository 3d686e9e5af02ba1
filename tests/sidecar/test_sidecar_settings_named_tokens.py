"""Named tokens in the settings (issue 17): `TOKEN_REFRESHER_TOKENS`, what a named token
inherits from the default one, the credentials safety rule, the derived files, and the
error lines (naming `TOKEN_REFRESHER_TOKENS__<NAME>__<FIELD>`) that the operator
translates back into annotation keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from token_refresher.settings import (
    CREDENTIAL_FIELDS,
    DEFAULT_TOKEN,
    TOKEN_FIELDS,
    Settings,
    config_errors,
    token_env_name,
)

BASE = {
    "TOKEN_REFRESHER_ISSUER": "https://idp.example",
    "TOKEN_REFRESHER_CLIENT_ID": "billing",
    "TOKEN_REFRESHER_CLIENT_SECRET_FILE": "/etc/token-refresher/client/secret",
    "TOKEN_REFRESHER_SCOPE": "invoices.read",
    "TOKEN_REFRESHER_OUTPUT": "/var/run/secrets/token-refresher/token",
}


def settings(tokens: Any, **env: str) -> Settings:
    raw = tokens if isinstance(tokens, str) else json.dumps(tokens)
    return Settings.from_env({**BASE, **env, "TOKEN_REFRESHER_TOKENS": raw})


def errors(tokens: Any, **env: str) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        settings(tokens, **env)
    return config_errors(caught.value)


def test_without_named_tokens_there_is_only_the_default_one() -> None:
    alone = Settings.from_env(BASE)
    assert list(alone.all_tokens()) == [DEFAULT_TOKEN]
    assert alone.all_tokens()[DEFAULT_TOKEN] is alone


def test_tokens_come_default_first_then_in_the_order_written() -> None:
    tokens = settings({"zeta": {}, "alpha": {}, "mid": {}}).all_tokens()
    assert list(tokens) == ["default", "zeta", "alpha", "mid"]


def test_a_named_token_inherits_what_it_does_not_set() -> None:
    payments = settings({"payments": {"audience": "payments-api"}}).all_tokens()["payments"]
    assert payments.audience == "payments-api"
    assert str(payments.issuer) == "https://idp.example/"
    assert payments.scope == "invoices.read"
    # The same IdP: the default's credentials are inherited.
    assert payments.client_id == "billing"
    assert payments.client_secret_file == Path("/etc/token-refresher/client/secret")


def test_the_default_token_is_exactly_the_unnamed_settings() -> None:
    named = settings({"payments": {"audience": "payments-api", "scope": "pay"}})
    assert named.audience is None
    assert named.scope == "invoices.read"
    assert named.output == Path("/var/run/secrets/token-refresher/token")


def test_numbers_mean_what_their_text_would_in_an_env_var() -> None:
    token = settings({"a": {"refresh_ratio": 0.5, "file_mode": 440, "timeout": "3"}})
    a = token.all_tokens()["a"]
    assert (a.refresh_ratio, a.file_mode, a.timeout) == (0.5, 0o440, 3.0)


def test_settings_names_are_case_insensitive_as_env_vars_are() -> None:
    a = settings({"a": {"AUDIENCE": "x"}}).all_tokens()["a"]
    assert a.audience == "x"


def test_a_token_at_another_issuer_does_not_inherit_credentials() -> None:
    lines = errors({"partner": {"issuer": "https://partner.example"}})
    assert len(lines) == 1
    assert lines[0].startswith(
        "TOKEN_REFRESHER_TOKENS__PARTNER__CLIENT_ID: required for grant client_credentials"
    )
    assert "not inherited" in lines[0]


def test_a_token_at_another_token_url_does_not_inherit_credentials() -> None:
    lines = errors({"partner": {"token_url": "https://partner.example/token"}})
    assert lines[0].startswith("TOKEN_REFRESHER_TOKENS__PARTNER__CLIENT_ID: required")


@pytest.mark.parametrize("field", sorted(CREDENTIAL_FIELDS))
def test_no_credential_reaches_another_idp(field: str) -> None:
    env = {
        "TOKEN_REFRESHER_CLIENT_AUTH": "client_secret_post",
        "TOKEN_REFRESHER_PRIVATE_KEY_ID": "k1",
        "TOKEN_REFRESHER_SERVICE_ACCOUNT_TOKEN_FILE": "/var/run/secrets/tokens/idp",
    }
    own = {"client_id": "partner", "client_secret_file": "/p/secret"}
    partner = settings({"partner": {"issuer": "https://partner.example", **own}}, **env)
    value = getattr(partner.all_tokens()["partner"], field)
    default = getattr(partner, field)
    if field in own:
        assert str(value) == own[field]
    else:
        assert value is None, f"{field} {default!r} was inherited by another IdP's token"


def test_a_token_giving_its_own_credentials_at_another_idp_is_valid() -> None:
    partner = settings(
        {
            "partner": {
                "issuer": "https://partner.example",
                "client_id": "x",
                "client_secret_file": "/p/secret",
            }
        }
    ).all_tokens()["partner"]
    assert str(partner.issuer) == "https://partner.example/"
    assert partner.client_id == "x"
    # Request parameters are not credentials: they are still inherited.
    assert partner.scope == "invoices.read"


def test_naming_the_same_issuer_again_is_the_same_idp() -> None:
    same = settings({"a": {"issuer": "https://idp.example/"}}).all_tokens()["a"]
    assert same.client_id == "billing"


def test_a_token_at_another_issuer_does_not_keep_the_default_token_url() -> None:
    # Else its request (with its own secret) would still go to the default's endpoint.
    tokens = settings(
        {"p": {"issuer": "https://partner.example", "client_id": "x", "client_auth": "none"}},
        TOKEN_REFRESHER_TOKEN_URL="https://idp.example/token",
    ).all_tokens()
    assert tokens["p"].token_url is None


def test_a_refresh_token_is_never_inherited() -> None:
    lines = errors(
        {"a": {"audience": "x"}},
        TOKEN_REFRESHER_GRANT="refresh_token",
        TOKEN_REFRESHER_REFRESH_TOKEN_FILE="/r/token",
    )
    assert lines == [
        "TOKEN_REFRESHER_TOKENS__A__REFRESH_TOKEN_FILE: required when "
        "TOKEN_REFRESHER_TOKENS__A__GRANT=refresh_token (not inherited: a refresh token "
        "is never shared between tokens)"
    ]


def test_output_and_state_file_are_derived_from_the_name() -> None:
    tokens = settings({"payments": {}}).all_tokens()
    assert tokens["payments"].output == Path("/var/run/secrets/token-refresher/payments")
    assert tokens["payments"].effective_state_file == Path(
        "/var/run/secrets/token-refresher/.payments.state"
    )


def test_a_default_state_file_gives_each_token_a_suffixed_one() -> None:
    tokens = settings(
        {"payments": {}}, TOKEN_REFRESHER_STATE_FILE="/var/lib/token-refresher/state"
    ).all_tokens()
    assert tokens["payments"].effective_state_file == Path(
        "/var/lib/token-refresher/state.payments"
    )
    assert tokens["default"].effective_state_file == Path("/var/lib/token-refresher/state")


def test_a_named_token_may_choose_its_file() -> None:
    a = settings({"a": {"output": "/x/a.json", "format": "json"}}).all_tokens()["a"]
    assert (a.output, a.format, a.effective_state_file) == (
        Path("/x/a.json"),
        "json",
        Path("/x/.a.json.state"),
    )


def test_two_tokens_may_not_share_an_output() -> None:
    lines = errors({"a": {"output": "/o/x"}, "b": {"output": "/o/x", "state_file": "/s/b"}})
    assert lines == [
        "TOKEN_REFRESHER_TOKENS__B__OUTPUT: /o/x is also the output of token a "
        "(TOKEN_REFRESHER_TOKENS__A__OUTPUT); two tokens may not share a file"
    ]


def test_a_named_token_may_not_take_the_default_output() -> None:
    lines = errors({"a": {"output": BASE["TOKEN_REFRESHER_OUTPUT"], "state_file": "/s/a"}})
    assert lines == [
        "TOKEN_REFRESHER_TOKENS__A__OUTPUT: /var/run/secrets/token-refresher/token is also "
        "the output of token default (TOKEN_REFRESHER_OUTPUT); two tokens may not share a file"
    ]


def test_two_tokens_may_not_share_a_state_file() -> None:
    lines = errors({"a": {"state_file": "/s/x"}, "b": {"state_file": "/s/x"}})
    assert lines == [
        "TOKEN_REFRESHER_TOKENS__B__STATE_FILE: /s/x is also the state file of token a "
        "(TOKEN_REFRESHER_TOKENS__A__STATE_FILE); two tokens may not share a file"
    ]


def test_a_wrong_value_names_the_token_and_the_field() -> None:
    assert errors({"payments": {"refresh_ratio": "1.5"}}) == [
        "TOKEN_REFRESHER_TOKENS__PAYMENTS__REFRESH_RATIO: Input should be less than 1"
    ]


def test_every_wrong_value_of_every_token_is_listed_at_once() -> None:
    lines = errors({"a": {"grant": "magic", "file_mode": "9"}, "b": {"format": "xml"}})
    assert sorted(line.split(":", 1)[0] for line in lines) == [
        "TOKEN_REFRESHER_TOKENS__A__FILE_MODE",
        "TOKEN_REFRESHER_TOKENS__A__GRANT",
        "TOKEN_REFRESHER_TOKENS__B__FORMAT",
    ]


def test_a_cross_field_problem_names_the_tokens_fields() -> None:
    assert errors({"x": {"grant": "token_exchange"}}) == [
        "TOKEN_REFRESHER_TOKENS__X__SERVICE_ACCOUNT_TOKEN_FILE: required when "
        "TOKEN_REFRESHER_TOKENS__X__GRANT=token_exchange"
    ]


@pytest.mark.parametrize("name", ["Payments", "pay_ments", "-pay", "pay-", "a.b", "", "x" * 64])
def test_a_name_must_be_a_dns_label(name: str) -> None:
    lines = errors({name: {}})
    assert lines == [
        f"TOKEN_REFRESHER_TOKENS__{name.upper()}: a token name must be a DNS label: at most "
        "63 lower-case letters, digits and '-', starting and ending with a letter or digit"
    ]


@pytest.mark.parametrize("name", ["a", "pay-ments", "x1", "9", "x" * 63])
def test_dns_labels_are_names(name: str) -> None:
    assert name in settings({name: {}}).all_tokens()


def test_default_is_not_a_name() -> None:
    assert errors({"default": {}}) == [
        "TOKEN_REFRESHER_TOKENS__DEFAULT: 'default' is the name of the unnamed token; "
        "choose another name"
    ]


def test_at_most_seven_named_tokens() -> None:
    assert len(settings({f"t{i}": {} for i in range(7)}).all_tokens()) == 8
    assert errors({f"t{i}": {} for i in range(8)}) == [
        "TOKEN_REFRESHER_TOKENS: at most 8 tokens per sidecar, the default one included, "
        "so at most 7 named tokens, not 8"
    ]


@pytest.mark.parametrize(
    "field", ["listen", "log_level", "report_url", "pod_name", "kubernetes_api", "tokens"]
)
def test_process_settings_are_not_per_token(field: str) -> None:
    assert errors({"a": {field: "x"}}) == [
        f"TOKEN_REFRESHER_TOKENS__A__{field.upper()}: not a per-token setting; it is set "
        f"once for the whole sidecar (TOKEN_REFRESHER_{field.upper()})"
    ]


def test_an_unknown_setting_is_named() -> None:
    assert errors({"a": {"audiance": "x"}}) == [
        "TOKEN_REFRESHER_TOKENS__A__AUDIANCE: not a setting"
    ]


@pytest.mark.parametrize("value", [None, True, ["x"], {"y": 1}])
def test_a_value_is_a_string_or_a_number(value: Any) -> None:
    assert errors({"a": {"scope": value}}) == [
        "TOKEN_REFRESHER_TOKENS__A__SCOPE: must be a string or a number"
    ]


def test_a_token_is_an_object() -> None:
    assert errors({"a": "audience=x"}) == [
        'TOKEN_REFRESHER_TOKENS__A: must be a JSON object of settings, e.g. {"audience": "api"}'
    ]


@pytest.mark.parametrize("raw", ["{not json", "[]", '"x"', "1"])
def test_tokens_is_a_json_object(raw: str) -> None:
    (line,) = errors(raw)
    assert line.startswith("TOKEN_REFRESHER_TOKENS: must be a JSON object {name: {setting: value}}")


def test_an_empty_tokens_variable_means_none() -> None:
    assert list(settings("").all_tokens()) == ["default"]


def test_named_tokens_are_checked_only_once_the_default_is_right() -> None:
    # Each would otherwise repeat the default's mistake under its own name.
    lines = errors({"a": {}, "b": {}}, TOKEN_REFRESHER_CLIENT_ID="")
    assert lines == [
        "TOKEN_REFRESHER_CLIENT_ID: required for grant client_credentials with client "
        "authentication client_secret_basic"
    ]


def test_the_process_environment_gives_named_tokens_too(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TOKEN_REFRESHER_TOKENS", '{"payments": {"audience": "p"}}')
    assert Settings.from_env().all_tokens()["payments"].audience == "p"


def test_an_explicit_mapping_ignores_the_process_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN_REFRESHER_TOKENS", '{"leak": {}}')
    monkeypatch.setenv("TOKEN_REFRESHER_AUDIENCE", "leak")
    tokens = settings({"a": {}}).all_tokens()
    assert list(tokens) == ["default", "a"]
    assert tokens["a"].audience is None


def test_error_names_follow_the_contract() -> None:
    assert (
        token_env_name("pay-ments", "client_id") == "TOKEN_REFRESHER_TOKENS__PAY-MENTS__CLIENT_ID"
    )
    assert token_env_name("pay-ments") == "TOKEN_REFRESHER_TOKENS__PAY-MENTS"
    assert token_env_name("default", "client_id") == "TOKEN_REFRESHER_CLIENT_ID"


def test_per_token_fields_are_settings_fields() -> None:
    assert set(Settings.model_fields) >= TOKEN_FIELDS
    assert CREDENTIAL_FIELDS <= TOKEN_FIELDS


def _from_file(path: Path, **env: str) -> Settings:
    return Settings.from_env({**BASE, **env, "TOKEN_REFRESHER_TOKENS_FILE": str(path)})


def test_named_tokens_may_come_from_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"payments": {"audience": "payments-api"}}))
    tokens = _from_file(path).all_tokens()
    assert list(tokens) == ["default", "payments"]
    assert tokens["payments"].audience == "payments-api"
    assert tokens["payments"].client_id == "billing"  # the same checks as TOKENS
    path.write_text(json.dumps({"payments": {"listen": "0.0.0.0:1"}}))
    with pytest.raises(ValidationError) as caught:
        _from_file(path)
    [line] = config_errors(caught.value)
    assert line.startswith("TOKEN_REFRESHER_TOKENS__PAYMENTS__LISTEN: not a per-token setting")


def test_a_tokens_file_that_cannot_be_read_or_comes_with_tokens_is_one_clear_line(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValidationError) as caught:
        _from_file(tmp_path / "missing.json")
    assert config_errors(caught.value) == [
        f"TOKEN_REFRESHER_TOKENS_FILE: cannot read {tmp_path / 'missing.json'}: "
        "No such file or directory"
    ]
    path = tmp_path / "tokens.json"
    path.write_text("{not json")
    with pytest.raises(ValidationError) as caught:
        _from_file(path)
    [line] = config_errors(caught.value)
    assert line.startswith(f"TOKEN_REFRESHER_TOKENS_FILE: {path} must hold a JSON object")
    path.write_text("{}")
    with pytest.raises(ValidationError) as caught:
        _from_file(path, TOKEN_REFRESHER_TOKENS='{"a": {}}')
    assert config_errors(caught.value) == [
        "TOKEN_REFRESHER_TOKENS_FILE: set this or TOKEN_REFRESHER_TOKENS, not both"
    ]
