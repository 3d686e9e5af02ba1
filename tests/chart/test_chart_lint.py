"""`helm lint --strict` is clean for the default values and every other values mode."""

from __future__ import annotations

from tests.chart.helm import VALUES, Chart


def test_helm_lint_strict_is_clean(chart: Chart, mode: str) -> None:
    proc = chart.lint(VALUES[mode])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout
    assert "[ERROR]" not in proc.stdout
