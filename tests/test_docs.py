"""The README's reference stays true: every setting, annotation, metric and event reason
the code knows appears in it, and the two commands it names exist.

The names are read from the code itself (the settings models, the annotation list, the
metrics registry, the event table), so adding one without documenting it fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from token_refresher.metrics import Metrics
from token_refresher.settings import ENV_PREFIX, Settings
from token_refresher_operator.config import OperatorSettings
from token_refresher_operator.events import reason_for
from token_refresher_operator.keys import TABLE, Key
from token_refresher_operator.safetynet import REASON as SIDECAR_NOT_INJECTED

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _documented(name: str) -> bool:
    # Tables list settings as `NAME` or inside a comma list of names in backticks.
    return re.search(rf"`[^`]*\b{re.escape(name)}\b[^`]*`", README) is not None


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_sidecar_setting_is_in_the_readme(field: str) -> None:
    name = field.upper()
    assert _documented(name), f"{ENV_PREFIX}{name} is not documented in README.md"


@pytest.mark.parametrize("field", sorted(OperatorSettings.model_fields))
def test_every_operator_setting_is_in_the_readme(field: str) -> None:
    assert _documented(field.upper()), f"TOKEN_REFRESHER_OPERATOR_{field.upper()} undocumented"


@pytest.mark.parametrize("key", TABLE, ids=lambda key: key.name)
def test_every_annotation_is_in_the_readme_as_the_table_says(key: Key) -> None:
    # In the first column of the annotations table, with the table's meaning and setting.
    row = re.search(rf"^\| [^|]*`{re.escape(key.name)}`[^|]*\|.*$", README, re.M)
    assert row is not None, f"token-refresher.io/{key.name} is not documented in README.md"
    assert key.doc in row.group(0), f"README's line for {key.name} is not: {key.doc}"
    if key.field is not None:
        setting = row.group(0).split("|")[2]
        assert f"`{key.field.upper()}`" in setting or "same names" in setting, key.name


def _metric_names() -> list[str]:
    names = []
    for family in Metrics().registry.collect():
        names.append(family.name + ("_total" if family.type == "counter" else ""))
    return sorted(names)


@pytest.mark.parametrize("metric", _metric_names())
def test_every_metric_is_in_the_readme(metric: str) -> None:
    assert f"`{metric}" in README, f"metric {metric} is not documented"


@pytest.mark.parametrize(
    "reason",
    sorted(
        {reason_for(s)[1] for s in ("failing", "recovered", "expired")} | {SIDECAR_NOT_INJECTED}
    ),
)
def test_every_event_reason_is_in_the_readme(reason: str) -> None:
    assert f"`{reason}`" in README, f"event reason {reason} is not documented"


def test_the_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    assert "`make demo`" in README
    assert "`make test`" in README
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^test:", makefile, re.M)
    assert re.search(r"^demo:", makefile, re.M)
