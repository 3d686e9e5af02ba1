"""Named-token annotations (`token-refresher.io/<setting>.<name>`, issue 17), parsed alone.

Each denial names the full annotation key the pod's author wrote; the property tests at
the end hold that for any set of annotations, named ones included.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from token_refresher_operator.annotations import (
    KEYS,
    MAX_TOKENS,
    PER_TOKEN_KEYS,
    PREFIX,
    InjectionSpec,
    NamedToken,
    SecretRef,
    parse,
)
from token_refresher_operator.config import ClusterConfig, load_cluster_config
from token_refresher_operator.errors import AnnotationError, ConfigError

P = PREFIX
CHART = Path(__file__).resolve().parents[2] / "charts" / "token-refresher"
BASE = {
    P + "inject": "true",
    P + "issuer": "https://idp.example/realms/prod",
    P + "client-id": "billing",
    P + "client-secret": "billing-oauth/secret",
}


def spec_of(annotations: dict[str, str], defaults: dict[str, str] | None = None) -> InjectionSpec:
    return parse(annotations={**BASE, **annotations}, defaults=defaults or {}, containers=["app"])


def denial(annotations: dict[str, str], defaults: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(AnnotationError) as exc:
        spec_of(annotations, defaults)
    return exc.value.lines


def test_one_annotation_makes_a_named_token_that_sets_only_that() -> None:
    spec = spec_of({P + "audience.payments": "payments-api"})
    assert spec.tokens == (
        NamedToken(name="payments", settings={"audience": "payments-api"}, file="payments"),
    )
    assert spec.file_of(spec.tokens[0]) == "/var/run/secrets/token-refresher/payments"
    assert spec.get("audience") is None  # the default token is as it was


def test_a_pod_without_named_annotations_has_no_named_tokens() -> None:
    assert spec_of({}).tokens == ()


def test_named_tokens_come_sorted_with_their_own_settings_and_files() -> None:
    spec = spec_of(
        {
            P + "issuer.partner": "https://idp2.example",
            P + "client-id.partner": "partner",
            P + "client-secret.partner": "partner-oauth/secret",
            P + "audience.payments": "payments-api",
            P + "file.payments": "payments.json",
            P + "mount-path": "/tokens",
        }
    )
    assert [t.name for t in spec.tokens] == ["partner", "payments"]
    partner, payments = spec.tokens
    assert partner.ref("client-secret") == SecretRef(secret="partner-oauth", key="secret")
    assert partner.ref("private-key") is None
    assert spec.file_of(partner) == "/tokens/partner"
    assert spec.file_of(payments) == "/tokens/payments.json"


@pytest.mark.parametrize(
    "name",
    ["Payments", "pay_ments", "-payments", "payments-", "pay.ments", "", "x" * 64, "pä"],
)
def test_a_name_that_is_no_dns_label_is_denied_naming_the_full_key(name: str) -> None:
    key = f"{P}audience.{name}"
    [line] = denial({key: "payments-api"})
    assert line.startswith(f"{key}: the token name after 'audience.' must be a DNS label")


def test_a_63_character_name_is_a_name() -> None:
    name = "a" * 63
    assert spec_of({f"{P}audience.{name}": "x"}).tokens[0].name == name


def test_default_is_the_unnamed_tokens_name() -> None:
    [line] = denial({P + "audience.default": "api"})
    assert line.startswith(f"{P}audience.default: 'default' is the name of the unnamed token")
    assert f"set {P}audience for it" in line


@pytest.mark.parametrize("setting", ["inject", "injected", "mount-path", "containers"])
def test_pod_wide_keys_cannot_be_set_per_token(setting: str) -> None:
    [line] = denial({f"{P}{setting}.payments": "x"})
    assert line.startswith(f"{P}{setting}.payments: {setting} is set for the whole pod")


def test_an_unknown_setting_with_a_name_is_denied_naming_the_full_key() -> None:
    [line] = denial({P + "audiences.payments": "x"})
    assert line.startswith(f"{P}audiences.payments: unknown setting; known: ")


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("grant", "password", "must be one of client_credentials"),
        ("issuer", "idp.example", "must be an http(s) URL"),
        ("client-secret", "no-key", "must be <secret>/<key>"),
        ("refresh-ratio", "1.5", "must be a number between 0 and 1"),
        ("file", "a/b", "must be a plain file name"),
        ("format", "xml", "must be one of raw, json"),
        ("scope", " padded", "must be a single line"),
        ("audience", "x" * 2049, "must be at most 2048 characters"),
    ],
)
def test_a_bad_value_of_a_named_token_is_denied_naming_the_full_key(
    setting: str, value: str, says: str
) -> None:
    [line] = denial({f"{P}{setting}.payments": value})
    assert line.startswith(f"{P}{setting}.payments: {says}"), line[:200]


def test_seven_named_tokens_are_allowed_and_an_eighth_is_denied_by_its_key() -> None:
    seven = {f"{P}audience.t{i}": f"api-{i}" for i in range(1, MAX_TOKENS)}
    assert len(spec_of(seven).tokens) == MAX_TOKENS - 1
    lines = denial({**seven, P + "scope.t8": "s", P + "audience.t8": "api-8"})
    # The token past the limit in alphabetical order, by its first key.
    assert lines == [
        f"{P}audience.t8: too many tokens: a pod has at most 8, the default one included, "
        "and these annotations name 9 (drop token 't8' or another)"
    ]


@pytest.mark.parametrize(
    "annotations",
    [
        {P + "file.payments": "token"},  # the default token's file
        {P + "audience.token": "api"},  # named like the default token's file
        {P + "audience.a": "x", P + "file.b": "a"},  # b in a's file
    ],
)
def test_two_tokens_in_one_file_are_denied(annotations: dict[str, str]) -> None:
    [line] = denial(annotations)
    assert line.startswith(P + "file."), line
    assert "give it another file name" in line


def test_an_empty_annotation_removes_a_named_cluster_default() -> None:
    defaults = {"audience.payments": "payments-api"}
    assert [t.name for t in spec_of({}, defaults).tokens] == ["payments"]
    assert spec_of({P + "audience.payments": ""}, defaults).tokens == ()


def test_the_pods_named_annotation_wins_over_a_named_cluster_default() -> None:
    spec = spec_of({P + "audience.payments": "mine"}, {"audience.payments": "cluster"})
    assert spec.tokens[0].settings == {"audience": "mine"}


def test_cluster_defaults_may_name_tokens_and_are_checked_like_annotations(
    tmp_path: Path,
) -> None:
    config = ClusterConfig.model_validate({"defaults": {"audience.payments": "payments-api"}})
    assert config.defaults == {"audience.payments": "payments-api"}
    path = tmp_path / "config.yaml"
    path.write_text(
        "defaults:\n  audience.Pay_ments: x\n  mount-path.payments: /x\n  grant.payments: pw\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_cluster_config(path)
    lines = exc.value.lines
    assert len(lines) == 3, lines
    assert any("defaults.audience.Pay_ments: the token name" in line for line in lines)
    assert any(
        "defaults.mount-path.payments: mount-path is set for the whole" in line for line in lines
    )
    assert any("defaults.grant.payments: must be one of" in line for line in lines)


def test_cluster_defaults_with_too_many_tokens_are_refused() -> None:
    eight = {f"audience.t{i}": "x" for i in range(1, MAX_TOKENS + 1)}
    with pytest.raises(ValueError, match=r"defaults\.audience\.t8: too many tokens"):
        ClusterConfig.model_validate({"defaults": eight})


def test_the_charts_schema_takes_named_defaults_for_exactly_the_per_token_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["defaults"]
    label = "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
    # Each named key is checked as its unnamed key is (helm cannot refuse `.default`
    # by pattern, RE2 has no lookahead: propertyNames does).
    expected = {
        f"^{key}\\.{label}$": {"$ref": f"#/properties/defaults/properties/{key}"}
        for key in schema["properties"]
        if key in PER_TOKEN_KEYS
    }
    assert schema["patternProperties"] == expected
    assert schema["propertyNames"] == {"not": {"pattern": "\\.default$"}}
    assert {"mount-path", "containers"} <= set(schema["properties"]) - PER_TOKEN_KEYS


# --- properties ------------------------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(["payments", "partner", "a", "b-2", "default", "token", "Pay", "x_y", ""]),
    st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=70),
    st.text(max_size=12),
)
SETTINGS = st.sampled_from(sorted(KEYS | {"audiences", "listen", ""}))
NAMED_KEYS = st.tuples(SETTINGS, NAMES).map(lambda sn: f"{P}{sn[0]}.{sn[1]}")
VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            "true",
            "api",
            "client_credentials",
            "token_exchange",
            "refresh_token",
            "service_account",
            "https://idp2.example",
            "partner-oauth/secret",
            "0.5",
            "1.5",
            "token",
            "payments",
            "a",
            "json",
            "app",
            "/x",
            "x" * 2049,
        ]
    ),
    st.text(max_size=20),
)
ANNOTATIONS = st.dictionaries(
    st.one_of(NAMED_KEYS, NAMED_KEYS, st.sampled_from(sorted(KEYS)).map(lambda k: P + k)),
    VALUES,
    max_size=14,
).map(lambda d: {**BASE, **d})


def shown(key: str) -> str:
    # How a denial shows a key it does not know: escaped, and cut after 100 characters.
    return repr(key[:100])[1:-1] + ("…" if len(key) > 100 else "")


def check_denial(lines: list[str], annotations: dict[str, str]) -> None:
    """Every line names a key that was given, or the setting a given token lacks."""
    assert lines
    given = {key[len(P) :] for key in annotations if key.startswith(P)}
    tokens = {key.partition(".")[2] for key in given if "." in key}
    for line in lines:
        assert "\n" not in line
        assert line.startswith(P), line[:200]
        if any(line.startswith(f"{P}{shown(key)}: ") for key in given):
            continue
        # A setting the default token, or a token the pod named, must have and lacks.
        key = line[len(P) :].split(": ", 1)[0].split(" ", 1)[0]
        setting, _, token = key.partition(".")
        assert setting in KEYS, line[:200]
        assert not token or token in tokens, line[:200]


@given(ANNOTATIONS)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@example({**BASE, P + "audience.Pay_ments": "x"})
@example({**BASE, **{f"{P}audience.t{i}": "x" for i in range(9)}})
def test_any_annotations_give_a_spec_or_denials_naming_a_given_key(
    annotations: dict[str, str],
) -> None:
    try:
        spec = parse(annotations=annotations, defaults={}, containers=["app"])
    except AnnotationError as exc:
        check_denial(exc.lines, annotations)
        return
    keys = [key[len(P) :] for key, value in annotations.items() if key.startswith(P) and value]
    names = {key.partition(".")[2] for key in keys if "." in key}
    assert {t.name for t in spec.tokens} == names
    assert len(spec.tokens) < MAX_TOKENS
    files = [spec.file, *(t.file for t in spec.tokens)]
    assert len(set(files)) == len(files)
    for token in spec.tokens:
        assert set(token.settings) <= PER_TOKEN_KEYS
