"""The annotation table (`keys.TABLE`) is the one place: the chart's defaults and schema,
the parser, the env renderer and the webhook's error names agree with it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from token_refresher.named import TOKEN_FIELDS
from token_refresher.settings import Settings
from token_refresher_operator.keys import (
    ANNOTATION_OF,
    KEYS,
    PER_TOKEN_KEYS,
    SECRET_KEYS,
    TABLE,
)

CHART = Path(__file__).resolve().parents[2] / "charts" / "token-refresher"


def test_the_chart_defaults_are_the_tables() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    expected = {key.name: key.chart_default for key in TABLE if key.chart_default is not None}
    assert values["defaults"] == expected


def test_the_chart_schema_checks_every_default_and_each_per_token_key_as_its_own() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["defaults"]
    offered = {key.name for key in TABLE if key.chart_default is not None}
    assert set(schema["properties"]) == offered
    named = {pattern.split("\\.")[0].lstrip("^") for pattern in schema["patternProperties"]}
    assert named == offered & PER_TOKEN_KEYS


def test_every_field_the_table_sets_is_a_sidecar_setting_a_token_may_have() -> None:
    fields = [key.field for key in TABLE if key.field is not None]
    assert len(fields) == len(set(fields))
    assert set(fields) <= set(Settings.model_fields) & TOKEN_FIELDS
    assert {key.name for key in TABLE if key.field} == PER_TOKEN_KEYS == set(ANNOTATION_OF.values())


def test_secrets_and_markers_are_never_chart_defaults() -> None:
    for key in TABLE:
        if key.secret or key.marker:
            assert key.chart_default is None, key.name
    assert set(SECRET_KEYS) == {"client-secret", "private-key", "refresh-token"}
    assert len(KEYS) == len(TABLE)


def test_the_chart_schema_allows_exactly_the_values_the_tables_checks_allow() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["defaults"]
    for key in TABLE:
        allowed = schema["properties"].get(key.name, {}).get("enum")
        if allowed is None:
            continue
        assert all(key.check(value) is None for value in allowed if value), key.name
        assert key.check("not-" + "-".join(v for v in allowed if v)) is not None, key.name
