"""Settings validation as data: `(field, message)` problems that each reader names its
own way, and a settings module the operator can import without the daemon."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from tests.support import python_output
from token_refresher.problems import Problem, config_problems, env_field_name
from token_refresher.settings import Settings, config_errors

BASE = {
    "TOKEN_REFRESHER_ISSUER": "https://idp.example",
    "TOKEN_REFRESHER_CLIENT_ID": "billing",
    "TOKEN_REFRESHER_CLIENT_SECRET_FILE": "/etc/token-refresher/client/secret",
}


def test_importing_the_settings_loads_no_http_client_metrics_or_cli() -> None:
    code = (
        "import json, sys, token_refresher.settings; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('httpx2', 'httpx', 'prometheus_client') or m.startswith('token_refresher.'))))"
    )
    loaded = set(json.loads(python_output(code)))
    assert loaded <= {
        "token_refresher.settings",
        "token_refresher.boot",  # DEFAULT_LISTEN: sockets only
        "token_refresher.lazy",  # the package's __getattr__
        "token_refresher.combinations",
        "token_refresher.kinds",
        "token_refresher.named",
        "token_refresher.problems",
        "token_refresher.sources",
    }


def test_a_problem_names_its_field_by_path_and_the_settings_it_mentions_by_reference() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.from_env(
            {
                **BASE,
                "TOKEN_REFRESHER_TOKENS": json.dumps(
                    {"payments": {"grant": "refresh_token", "backoff_max": 0.5}}
                ),
            }
        )
    problems = config_problems(caught.value)
    assert (
        Problem(
            ("tokens", "payments", "refresh_token_file"),
            "required when {0}=refresh_token"
            " (not inherited: a refresh token is never shared between tokens)",
            (("tokens", "payments", "grant"),),
        )
        in problems
    )
    assert [p.field for p in problems] == [
        ("tokens", "payments", "refresh_token_file"),
        ("tokens", "payments", "backoff_max"),
    ]
    # The sidecar's reader names them by env var; another reader passes its own names.
    assert config_errors(caught.value)[0] == (
        "TOKEN_REFRESHER_TOKENS__PAYMENTS__REFRESH_TOKEN_FILE: required when "
        "TOKEN_REFRESHER_TOKENS__PAYMENTS__GRANT=refresh_token (not inherited: a refresh "
        "token is never shared between tokens)"
    )
    assert (
        problems[0]
        .render("/".join)
        .startswith(
            "tokens/payments/refresh_token_file: required when tokens/payments/grant=refresh_token"
        )
    )
    assert env_field_name(("tokens",)) == "TOKEN_REFRESHER_TOKENS"
