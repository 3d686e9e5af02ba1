"""`token-refresher-operator`: bad configuration is one line per problem and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from token_refresher_operator.cli import main

E = "TOKEN_REFRESHER_OPERATOR_"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith(E):
            monkeypatch.delenv(key)
    return monkeypatch


def test_check_accepts_a_good_configuration(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("defaults: {format: json}\n")
    clean_env.setenv(E + "DEV", "true")
    clean_env.setenv(E + "CONFIG_FILE", str(config))
    assert main(["--check"]) == 0
    assert "configuration OK" in capsys.readouterr().out


def test_bad_configuration_exits_2_with_one_line_per_problem(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv(E + "DEV", "true")
    clean_env.setenv(E + "HEALTH_PORT", "http")
    clean_env.setenv(E + "LOG_LEVEL", "loud")
    assert main([]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"token-refresher-operator: {E}HEALTH_PORT: Input should be a valid integer, unable to "
        "parse string as an integer (got 'http')",
        f"token-refresher-operator: {E}LOG_LEVEL: Input should be 'debug', 'info', 'warning' "
        "or 'error' (got 'loud')",
    ]


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("token-refresher-operator")
    env = {k: v for k, v in os.environ.items() if not k.startswith(E)}
    env[E + "DEV"] = "true"
    env[E + "CONFIG_FILE"] = str(tmp_path / "missing.yaml")
    proc = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == (
        f"token-refresher-operator: {E}CONFIG_FILE: cannot read {tmp_path / 'missing.yaml'}: "
        "No such file or directory\n"
    )


def test_without_the_operator_extra_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The sidecar image has the script but not kopf: a None entry makes `import kopf` fail.
    monkeypatch.setitem(sys.modules, "kopf", None)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "pip install 'token-refresher[operator]'" in err
    assert "Traceback" not in err
