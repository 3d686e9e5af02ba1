"""The console script as users run it: configuration errors, --help, --once, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import free_port, http_ok, wait_until
from tests.support.fakes import spin_until
from token_refresher import Settings

SCRIPT = str(Path(sys.executable).parent / "token-refresher")


class TokenEndpoint(ThreadingHTTPServer):
    """A real HTTP token endpoint on localhost, answering from `self.answers`."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits = 0
        self.answer: tuple[int, dict] = (
            200,
            {"access_token": "SECRET-CANARY-cli-token", "token_type": "Bearer", "expires_in": 3600},
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/token"


class _Handler(BaseHTTPRequestHandler):
    server: TokenEndpoint

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.hits += 1
        status, body = self.server.answer
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[TokenEndpoint]:
    server = TokenEndpoint()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def env(tmp_path: Path, secret_file: Path) -> dict[str, str]:
    """The process environment minus any TOKEN_REFRESHER_ setting of the caller's."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TOKEN_REFRESHER_") or k == "TOKEN_REFRESHER_TEST_RUN"
    }
    (tmp_path / "out").mkdir(exist_ok=True)
    return base | {
        "TOKEN_REFRESHER_CLIENT_ID": "billing",
        "TOKEN_REFRESHER_CLIENT_SECRET_FILE": str(secret_file),
        "TOKEN_REFRESHER_OUTPUT": str(tmp_path / "out" / "token"),
        "TOKEN_REFRESHER_LISTEN": f"127.0.0.1:{free_port()}",
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], env=env, capture_output=True, text=True, timeout=30)


def test_bad_configuration_is_one_line_per_problem_and_exit_2(env, endpoint) -> None:
    env |= {
        "TOKEN_REFRESHER_TOKEN_URL": endpoint.url,
        "TOKEN_REFRESHER_REFRESH_RATIO": "1.5",
        "TOKEN_REFRESHER_FORMAT": "xml",
        "TOKEN_REFRESHER_LISTEN": "nowhere",
        "TOKEN_REFRESHER_FILE_MODE": "rw-r--r--",
    }
    result = run(env)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "TOKEN_REFRESHER_FORMAT",
        "TOKEN_REFRESHER_FILE_MODE",
        "TOKEN_REFRESHER_REFRESH_RATIO",
        "TOKEN_REFRESHER_LISTEN",
    ]
    assert "'raw' or 'json'" in lines[0]
    assert "Traceback" not in result.stderr
    assert endpoint.hits == 0


def test_inconsistent_configuration_names_every_variable(env) -> None:
    del env["TOKEN_REFRESHER_CLIENT_SECRET_FILE"]
    env |= {
        "TOKEN_REFRESHER_GRANT": "jwt_bearer",
        "TOKEN_REFRESHER_CLIENT_AUTH": "client_secret_post",
    }
    result = run(env, "--once")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "TOKEN_REFRESHER_ISSUER or TOKEN_REFRESHER_TOKEN_URL: one is required (an OIDC "
        "issuer to discover the token endpoint, or the endpoint itself)",
        "TOKEN_REFRESHER_SERVICE_ACCOUNT_TOKEN_FILE: required when "
        "TOKEN_REFRESHER_GRANT=jwt_bearer",
        "TOKEN_REFRESHER_CLIENT_SECRET_FILE: required for client authentication client_secret_post",
    ]


def test_unreadable_files_are_configuration_errors_before_any_request(
    env, endpoint, tmp_path: Path
) -> None:
    env |= {
        "TOKEN_REFRESHER_TOKEN_URL": endpoint.url,
        "TOKEN_REFRESHER_CLIENT_SECRET_FILE": str(tmp_path / "missing"),
        "TOKEN_REFRESHER_CA_FILE": str(tmp_path / "missing-ca.pem"),
    }
    result = run(env, "--once")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(
        "TOKEN_REFRESHER_CLIENT_SECRET_FILE: cannot read the client "
        f"secret file {tmp_path / 'missing'}: No such file"
    )
    assert lines[1].startswith("TOKEN_REFRESHER_CA_FILE: not a usable PEM CA bundle")
    assert endpoint.hits == 0


def test_help_lists_every_setting_and_once() -> None:
    result = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "--once" in result.stdout
    described = list(Settings.describe())
    assert len(described) == len(Settings.model_fields)
    for env_var, _, description in described:
        assert f"  {env_var}  (default:" in result.stdout
        # Each field's docstring is its description (use_attribute_docstrings): one lost
        # (a field without it, or the source unreadable) would leave a setting unexplained.
        assert description, f"{env_var} has no description"
        assert description in " ".join(result.stdout.split()), env_var


def test_once_writes_one_token_and_exits_0(env, endpoint) -> None:
    env["TOKEN_REFRESHER_TOKEN_URL"] = endpoint.url
    result = run(env, "--once")
    assert result.returncode == 0, result.stderr
    assert Path(env["TOKEN_REFRESHER_OUTPUT"]).read_text() == "SECRET-CANARY-cli-token"
    logged = [json.loads(line) for line in result.stderr.splitlines()]
    assert logged[-1]["msg"] == "token refreshed"
    assert logged[-1]["level"] == "info"
    assert "SECRET-CANARY" not in result.stderr


def test_once_without_a_token_exits_1(env, endpoint) -> None:
    env["TOKEN_REFRESHER_TOKEN_URL"] = endpoint.url
    endpoint.answer = (401, {"error": "invalid_client", "error_description": "who are you"})
    result = run(env, "--once")
    assert result.returncode == 1
    line = json.loads(result.stderr.splitlines()[-1])
    assert line["error"] == "invalid_client"
    assert line["msg"].endswith("rejected client 'billing': invalid_client (who are you)")
    assert "Traceback" not in result.stderr
    assert not Path(env["TOKEN_REFRESHER_OUTPUT"]).exists()


def test_once_writes_every_token_and_exits_0(env, endpoint) -> None:
    env["TOKEN_REFRESHER_TOKEN_URL"] = endpoint.url
    env["TOKEN_REFRESHER_TOKENS"] = json.dumps({"payments": {"audience": "payments-api"}})
    result = run(env, "--once")
    assert result.returncode == 0, result.stderr
    out = Path(env["TOKEN_REFRESHER_OUTPUT"])
    assert out.read_text() == (out.parent / "payments").read_text() == "SECRET-CANARY-cli-token"
    logged = [json.loads(line) for line in result.stderr.splitlines()]
    refreshed = [line["token"] for line in logged if line["msg"] == "token refreshed"]
    assert sorted(refreshed) == ["default", "payments"]
    assert logged[-1]["msg"] == "wrote 2 of 2 tokens"
    assert endpoint.hits == 2


def test_once_exits_1_when_one_token_is_missing(env, endpoint, tmp_path: Path) -> None:
    env["TOKEN_REFRESHER_TOKEN_URL"] = endpoint.url
    dead = f"http://127.0.0.1:{free_port()}/token"
    partner = {"token_url": dead, "client_id": "p", "client_auth": "none", "timeout": "2"}
    env["TOKEN_REFRESHER_TOKENS"] = json.dumps({"partner": partner})
    result = run(env, "--once")
    assert result.returncode == 1
    assert Path(env["TOKEN_REFRESHER_OUTPUT"]).exists()
    logged = [json.loads(line) for line in result.stderr.splitlines()]
    assert logged[-1]["msg"] == "wrote 1 of 2 tokens; no token for partner"
    assert [line["token"] for line in logged if line.get("error") == "connect_error"] == ["partner"]


def test_a_named_tokens_problems_name_it_and_exit_2(env, endpoint, tmp_path: Path) -> None:
    env["TOKEN_REFRESHER_TOKEN_URL"] = endpoint.url
    env["TOKEN_REFRESHER_TOKENS"] = json.dumps(
        {
            "partner": {"client_secret_file": str(tmp_path / "missing")},
            "Bad": {"audience": "x"},
        }
    )
    result = run(env, "--once")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "TOKEN_REFRESHER_TOKENS__BAD: a token name must be a DNS label: at most 63 "
        "lower-case letters, digits and '-', starting and ending with a letter or digit"
    ]
    env["TOKEN_REFRESHER_TOKENS"] = json.dumps(
        {"partner": {"client_secret_file": str(tmp_path / "missing")}}
    )
    result = run(env, "--once")
    assert result.returncode == 2
    assert result.stderr.startswith(
        "TOKEN_REFRESHER_TOKENS__PARTNER__CLIENT_SECRET_FILE: cannot read the client secret "
        f"file {tmp_path / 'missing'}: No such file"
    )
    assert endpoint.hits == 0


def test_sigterm_stops_the_daemon_within_a_second(env, endpoint) -> None:
    env["TOKEN_REFRESHER_TOKEN_URL"] = endpoint.url
    env["TOKEN_REFRESHER_LOG_FORMAT"] = "text"
    output = Path(env["TOKEN_REFRESHER_OUTPUT"])
    listen = env["TOKEN_REFRESHER_LISTEN"]
    process = subprocess.Popen([SCRIPT], env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://{listen}/readyz"
        wait_until(f"{url} to answer 200", lambda: http_ok(url), 15, every=0.05, note=None)
        content = output.read_bytes()
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=5)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stderr = process.stderr.read() if process.stderr else ""
        if process.stderr:
            process.stderr.close()
    assert code == 0
    assert elapsed < 1.0
    assert output.read_bytes() == content
    assert [p.name for p in output.parent.iterdir()] == ["token"]
    assert "stopped after" in stderr.splitlines()[-1]
    assert "1 refresh, 0 failed attempts, token valid until" in stderr


async def test_serve_runs_in_process_until_stopped(make_settings, idp, clock, half) -> None:
    from token_refresher import Refresher, serve

    settings = make_settings()
    refresher = Refresher(settings, transport=idp.transport, clock=clock, random=half)
    task = asyncio.create_task(serve(settings, refresher=refresher))
    await spin_until(lambda: refresher.refresh_count > 0)
    refresher.stop()
    async with asyncio.timeout(1):
        assert await task == 0
    assert settings.output.read_text() == "SECRET-CANARY-access-1"
