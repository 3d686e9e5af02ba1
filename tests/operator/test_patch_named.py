"""Named tokens in the JSON Patch (issue 17): TOKEN_REFRESHER_TOKENS, their Secrets and
service-account tokens in the sidecar only, TOKEN_FILE_<NAME> in the app containers.

The env is read back with the sidecar's own model (`Settings.all_tokens()`), so each test
also shows what the sidecar will do with it; denials come from that model, in the words
of the annotations.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.operator.test_annotations_named import check_denial
from tests.operator.test_patch import BASE, P, make_pod, ops_for
from token_refresher.problems import Problem
from token_refresher.settings import Settings
from token_refresher_operator.annotations import KEYS, MAX_TOKENS, PER_TOKEN_KEYS
from token_refresher_operator.envcheck import annotation_line
from token_refresher_operator.errors import AnnotationError
from token_refresher_operator.keys import ANNOTATION_OF, FIELD_OF
from token_refresher_operator.patch import CREDENTIALS_DIR, TOKENS_ENV

IDP2 = "https://idp2.example/realms/partners"
THREE = {
    **BASE,
    P + "audience": "invoices-api",
    P + "audience.payments": "payments-api",
    P + "issuer.partner": IDP2,
    P + "client-id.partner": "billing-at-partner",
    P + "client-secret.partner": "partner-oauth/secret",
}


def patched(annotations: dict[str, str], **pod: Any) -> dict[str, Any]:
    before = make_pod(annotations, **pod)
    return jsonpatch.apply_patch(before, ops_for(before))  # type: ignore[no-any-return]


def sidecar(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["initContainers"][0]  # type: ignore[no-any-return]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {var["name"]: var.get("value", "") for var in container.get("env") or []}


def tokens_of(pod: dict[str, Any]) -> dict[str, Settings]:
    """What the sidecar makes of its env: each token's effective settings."""
    env = env_of(sidecar(pod))
    return Settings.from_env({k: v for k, v in env.items() if v}).all_tokens()


def denial(annotations: dict[str, str]) -> list[str]:
    with pytest.raises(AnnotationError) as exc:
        ops_for(make_pod(annotations))
    return exc.value.lines


def test_three_tokens_two_idps_the_worked_example() -> None:
    pod = patched(THREE)
    env = env_of(sidecar(pod))
    assert json.loads(env[TOKENS_ENV]) == {
        # Same IdP: only what differs; the client and its secret are inherited.
        "payments": {"audience": "payments-api"},
        # Another IdP: its own client and secret, mounted for it alone.
        "partner": {
            "issuer": IDP2,
            "client_id": "billing-at-partner",
            "client_secret_file": f"{CREDENTIALS_DIR}/tokens/partner/client-secret/client-secret",
        },
    }
    tokens = tokens_of(pod)
    assert list(tokens) == ["default", "partner", "payments"]
    mount = "/var/run/secrets/token-refresher"
    assert {name: str(t.output) for name, t in tokens.items()} == {
        "default": f"{mount}/token",
        "partner": f"{mount}/partner",
        "payments": f"{mount}/payments",
    }
    assert tokens["payments"].audience == "payments-api"
    assert tokens["payments"].client_secret_file == tokens["default"].client_secret_file
    assert str(tokens["partner"].issuer).rstrip("/") == IDP2
    # Not a credential, so inherited even at another IdP: override it there if need be.
    assert tokens["partner"].audience == "invoices-api"
    assert tokens["partner"].client_secret_file != tokens["default"].client_secret_file
    # Each keeps its rotated refresh token on the sidecar's own state volume.
    assert str(tokens["payments"].effective_state_file) == (
        "/var/lib/token-refresher/refresh-token.payments"
    )
    assert env_of(pod["spec"]["containers"][0]) == {
        "TOKEN_FILE": f"{mount}/token",
        "TOKEN_FILE_PARTNER": f"{mount}/partner",
        "TOKEN_FILE_PAYMENTS": f"{mount}/payments",
    }


def test_a_named_tokens_secret_is_mounted_into_the_sidecar_only() -> None:
    pod = patched(THREE, containers=("app", "worker"))
    volume = {v["name"]: v for v in pod["spec"]["volumes"]}["token-refresher-1-client-secret"]
    assert volume["secret"]["secretName"] == "partner-oauth"
    assert volume["secret"]["items"] == [{"key": "secret", "path": "client-secret"}]
    assert {
        "name": "token-refresher-1-client-secret",
        "mountPath": f"{CREDENTIALS_DIR}/tokens/partner/client-secret",
        "readOnly": True,
    } in sidecar(pod)["volumeMounts"]
    for app in pod["spec"]["containers"]:
        assert [m["name"] for m in app["volumeMounts"]] == ["token-refresher-token"]


def test_a_pod_without_named_tokens_gets_no_tokens_env() -> None:
    pod = patched(BASE)
    assert TOKENS_ENV not in env_of(sidecar(pod))
    assert list(env_of(pod["spec"]["containers"][0])) == ["TOKEN_FILE"]


def test_a_secret_the_default_token_mounts_already_is_not_mounted_twice() -> None:
    pod = patched(
        {
            **BASE,
            P + "client-secret.payments": "billing-oauth/secret",  # the default's
            P + "client-secret.reports": "reports-oauth/secret",
            P + "client-secret.audit": "reports-oauth/secret",  # the same as reports'
        }
    )
    secrets = [v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v]
    assert secrets == ["billing-oauth", "reports-oauth"]
    named = json.loads(env_of(sidecar(pod))[TOKENS_ENV])
    assert named["payments"]["client_secret_file"] == (
        f"{CREDENTIALS_DIR}/client-secret/client-secret"
    )
    assert named["reports"]["client_secret_file"] == named["audit"]["client_secret_file"]


def test_volume_names_stay_dns_labels_with_seven_long_named_tokens() -> None:
    names = [f"{i}" + "x" * 62 for i in range(1, MAX_TOKENS)]
    notes = dict(BASE)
    for i, name in enumerate(names):
        notes[f"{P}client-secret.{name}"] = f"s{i}/secret"
        notes[f"{P}private-key.{name}"] = f"k{i}/tls.key"
        notes[f"{P}refresh-token.{name}"] = f"r{i}/token"
        notes[f"{P}client-auth.{name}"] = "client_secret_post"
    pod = patched(notes)
    volumes = [v["name"] for v in pod["spec"]["volumes"]]
    assert len(volumes) == len(set(volumes))
    assert len(volumes) == 2 + 1 + 3 * len(names) + 1
    for name in volumes:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name), name
    mounts = [m["mountPath"] for m in sidecar(pod)["volumeMounts"]]
    assert len(mounts) == len(set(mounts))
    env = env_of(pod["spec"]["containers"][0])
    assert env[f"TOKEN_FILE_{names[0].upper()}"] == f"/var/run/secrets/token-refresher/{names[0]}"


def test_token_file_env_is_upper_case_with_underscores_and_follows_file_and_mount_path() -> None:
    pod = patched(
        {
            **BASE,
            P + "mount-path": "/tokens",
            P + "audience.payments-eu": "payments-api",
            P + "file.payments-eu": "payments.json",
            P + "format.payments-eu": "json",
        }
    )
    assert env_of(pod["spec"]["containers"][0])["TOKEN_FILE_PAYMENTS_EU"] == (
        "/tokens/payments.json"
    )
    assert json.loads(env_of(sidecar(pod))[TOKENS_ENV]) == {
        "payments-eu": {
            "audience": "payments-api",
            "output": "/tokens/payments.json",
            "format": "json",
        }
    }
    assert str(tokens_of(pod)["payments-eu"].output) == "/tokens/payments.json"


def test_a_token_file_env_the_container_sets_itself_wins() -> None:
    before = make_pod({**THREE})
    before["spec"]["containers"][0]["env"] = [{"name": "TOKEN_FILE_PAYMENTS", "value": "/mine"}]
    pod = jsonpatch.apply_patch(before, ops_for(before))
    assert env_of(pod["spec"]["containers"][0]) == {
        "TOKEN_FILE_PAYMENTS": "/mine",
        "TOKEN_FILE": "/var/run/secrets/token-refresher/token",
        "TOKEN_FILE_PARTNER": "/var/run/secrets/token-refresher/partner",
    }


def test_a_token_exchange_at_another_idp_gets_its_own_service_account_token() -> None:
    notes = {
        **BASE,
        # Two tokens at the partner's IdP share one projected token of its audience.
        **{
            f"{P}{setting}.{name}": value
            for name in ("partner", "partner-audit")
            for setting, value in (
                ("issuer", IDP2),
                ("grant", "token_exchange"),
                ("client-id", "billing"),
                ("client-auth", "none"),
                ("service-account-audience", "https://idp2.example"),
            )
        },
    }
    pod = patched(notes)
    projected = [v for v in pod["spec"]["volumes"] if v["name"] == "token-refresher-sa-token-1"]
    assert [v["projected"]["sources"][0]["serviceAccountToken"]["audience"] for v in projected] == [
        "https://idp2.example"
    ]
    assert "token-refresher-sa-token" not in {v["name"] for v in pod["spec"]["volumes"]}
    assert {
        "name": "token-refresher-sa-token-1",
        "mountPath": f"{CREDENTIALS_DIR}/serviceaccount-1",
        "readOnly": True,
    } in sidecar(pod)["volumeMounts"]
    tokens = tokens_of(pod)
    for name in ("partner", "partner-audit"):
        assert str(tokens[name].service_account_token_file) == (
            f"{CREDENTIALS_DIR}/serviceaccount-1/token"
        )


def test_a_token_at_the_same_idp_inherits_the_default_tokens_service_account_token() -> None:
    notes = {
        P + "inject": "true",
        P + "issuer": "https://idp.example",
        P + "grant": "token_exchange",
        P + "client-id": "billing",
        P + "client-auth": "none",
        P + "service-account-audience": "https://idp.example",
        P + "audience.payments": "payments-api",
    }
    pod = patched(notes)
    assert json.loads(env_of(sidecar(pod))[TOKENS_ENV]) == {
        "payments": {"audience": "payments-api"}
    }
    sa = [v["name"] for v in pod["spec"]["volumes"] if v["name"].startswith("token-refresher-sa")]
    assert sa == ["token-refresher-sa-token"]
    assert str(tokens_of(pod)["payments"].service_account_token_file) == (
        f"{CREDENTIALS_DIR}/serviceaccount/token"
    )


def test_a_named_token_exchange_uses_the_unnamed_audience_the_default_token_does_not_need() -> None:
    notes = {
        **BASE,
        P + "service-account-audience": "https://idp.example",
        P + "grant.exchange": "token_exchange",
    }
    pod = patched(notes)
    assert str(tokens_of(pod)["exchange"].service_account_token_file) == (
        f"{CREDENTIALS_DIR}/serviceaccount-1/token"
    )
    assert TOKENS_ENV in env_of(sidecar(pod))
    assert "TOKEN_REFRESHER_SERVICE_ACCOUNT_TOKEN_FILE" not in env_of(sidecar(pod))


@pytest.mark.parametrize(
    ("notes", "starts"),
    [
        # Another IdP inherits no credentials: the partner's client id is missing.
        ({P + "issuer.partner": IDP2}, f"{P}client-id.partner: required"),
        (
            {
                P + "token-url.partner": IDP2 + "/token",
                P + "client-id.partner": "p",
                P + "client-auth.partner": "client_secret_basic",
            },
            f"{P}client-secret.partner: required",
        ),
        # A refresh token is never shared between tokens, even at one IdP.
        ({P + "grant.offline": "refresh_token"}, f"{P}refresh-token.offline: required"),
        ({P + "token-params.payments": "grant_type=x"}, f"{P}token-params.payments: must not"),
        (
            {P + "grant.exchange": "token_exchange"},
            f"{P}service-account-audience.exchange: required",
        ),
    ],
)
def test_the_sidecars_verdict_on_a_named_token_names_its_annotation(
    notes: dict[str, str], starts: str
) -> None:
    lines = denial({**BASE, **notes})
    assert any(line.startswith(starts) for line in lines), lines
    check_denial(lines, {**BASE, **notes})


def test_a_pod_volume_named_like_a_named_tokens_volume_is_a_conflict() -> None:
    before = make_pod(THREE)
    before["spec"]["volumes"] = [{"name": "token-refresher-1-client-secret", "emptyDir": {}}]
    with pytest.raises(AnnotationError, match="already has a volume named token-refresher-1-"):
        ops_for(before)


def test_sidecar_problems_about_named_tokens_are_named_by_annotation() -> None:
    assert (
        annotation_line(
            Problem(("tokens", "pay-ments", "client_id"), "required for grant client_credentials")
        )
        == "token-refresher.io/client-id.pay-ments: required for grant client_credentials"
    )
    assert annotation_line(
        Problem(
            ("tokens", "a", "output"),
            "/x is also the output of token b ({0}); two tokens may not share a file",
            (("tokens", "b", "output"),),
        )
    ) == (
        "token-refresher.io/file.a: /x is also the output of token b "
        "(token-refresher.io/file.b); two tokens may not share a file"
    )
    # What no annotation sets is the operator's doing, in the sidecar's words.
    assert annotation_line(Problem(("tokens", "a", "state_file"), "clash")) == (
        "token-refresher operator configuration: TOKEN_REFRESHER_TOKENS__A__STATE_FILE: clash"
    )
    # A token named like a setting is still a token.
    assert annotation_line(Problem(("tokens", "audience"), "bad")).startswith(
        "token-refresher operator configuration: token audience: "
    )


def test_every_per_token_annotation_sets_a_per_token_sidecar_setting() -> None:
    from token_refresher.settings import TOKEN_FIELDS

    assert set(FIELD_OF) == PER_TOKEN_KEYS == set(ANNOTATION_OF.values())
    assert set(FIELD_OF.values()) <= TOKEN_FIELDS


# --- property ------------------------------------------------------------------------------

NAMES = st.sampled_from(["payments", "partner", "b-2", "default", "token", "Pay", ""])
NAMED = st.dictionaries(
    st.tuples(st.sampled_from(sorted(KEYS)), NAMES).map(lambda sn: f"{P}{sn[0]}.{sn[1]}"),
    st.sampled_from(
        [
            "",
            "payments-api",
            IDP2,
            "partner",
            "partner-oauth/secret",
            "token_exchange",
            "refresh_token",
            "client_secret_post",
            "service_account",
            "none",
            "json",
            "0.5",
            "token",
            "grant_type=x",
            "https://idp2.example",
        ]
    ),
    max_size=8,
)


@given(NAMED)
@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@example({P + "issuer.partner": IDP2})
@example({P + "audience.payments": "payments-api", P + "grant.payments": "token_exchange"})
def test_any_named_annotations_give_a_valid_sidecar_or_denials_naming_a_key(
    named: dict[str, str],
) -> None:
    notes = {**BASE, **named}
    try:
        pod = patched(notes)
    except AnnotationError as exc:
        check_denial(exc.lines, notes)
        return
    tokens = tokens_of(pod)  # the sidecar accepts what it is given
    given = {key[len(P) :].partition(".")[2] for key, v in named.items() if v}
    assert set(tokens) == {"default", *given}
    app = env_of(pod["spec"]["containers"][0])
    for name, token in tokens.items():
        if name != "default":
            assert app[f"TOKEN_FILE_{name.upper().replace('-', '_')}"] == str(token.output)
    mounted = {m["mountPath"] for m in sidecar(pod)["volumeMounts"]}
    for token in tokens.values():
        for path in (token.client_secret_file, token.service_account_token_file):
            if path is not None:
                assert str(Path(path).parent) in mounted
