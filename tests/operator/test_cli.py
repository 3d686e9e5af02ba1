"""`token-refresher-operator`: bad configuration is one line per problem and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port, python_output
from token_refresher.boot import listen_early
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
    env[E + "LISTEN_HOST"] = "127.0.0.1"  # it binds its health port before anything else
    env[E + "HEALTH_PORT"] = str(free_port())
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
    monkeypatch.setenv(E + "LISTEN_HOST", "127.0.0.1")
    monkeypatch.setenv(E + "HEALTH_PORT", str(free_port()))
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "pip install 'token-refresher[operator]'" in err
    assert "Traceback" not in err


def test_the_health_port_is_bound_before_kopf_is_imported(tmp_path: Path) -> None:
    # The kubelet's first probe waits in the socket's queue instead of being refused
    # while kopf and the kubernetes client load. The variables and defaults it reads
    # without the settings are the settings' own.
    from token_refresher_operator.cli import _health_socket
    from token_refresher_operator.config import ENV_PREFIX, OperatorSettings

    fields = OperatorSettings.model_fields
    assert (fields["listen_host"].default, fields["health_port"].default) == ("0.0.0.0", 8080)
    assert ENV_PREFIX == E
    port = free_port()
    sock = _health_socket({E + "LISTEN_HOST": "127.0.0.1", E + "HEALTH_PORT": str(port)})
    assert sock is not None
    with sock:
        assert sock.getsockname() == ("127.0.0.1", port)
    assert _health_socket({E + "HEALTH_PORT": "http"}) is None


async def test_a_probe_queued_on_the_early_socket_is_answered_by_the_health_server() -> None:
    import asyncio

    from token_refresher_operator.healthserver import make_health_app, serve_health
    from token_refresher_operator.metrics import OperatorMetrics

    port = free_port()
    sock = listen_early(f"127.0.0.1:{port}")
    assert sock is not None
    # The kubelet's probe, sent while the operator still imports kopf.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    stop = asyncio.Event()
    app = make_health_app(metrics=OperatorMetrics(), status=lambda: {"admission": {}})
    server = asyncio.create_task(
        serve_health(host="127.0.0.1", port=port, app=app, stop=stop, listening=sock)
    )
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    stop.set()
    await server
    assert answer.startswith(b"HTTP/1.1 200 OK")


def test_the_console_script_module_loads_nothing_heavy_before_it_binds() -> None:
    # `main` binds the health port first; what importing its module loads comes before.
    program = (
        "import json, sys, token_refresher_operator.cli\n"
        "heavy = ['pydantic', 'kopf', 'kubernetes', 'aiohttp', 'asyncio']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    assert python_output(program).strip() == "[]"
