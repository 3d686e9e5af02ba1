"""The pieces every fault test uses: the real sidecar as a process, a report receiver,
and an app stand-in that reads the token file all the time.

- `Sidecar` runs the `token-refresher` console script (its own process group, stderr in
  a file, LISTEN on a free 127.0.0.1 port) and reads its `/status`, `/readyz`,
  `/metrics` and JSON log lines.
- `ReportReceiver` is the operator's `/report` endpoint reduced to a recorder: HTTPS with
  a self-signed certificate the sidecar trusts through REPORT_CA_FILE; every body is
  also fed to the operator's own parser, so a report the operator would refuse fails.
- `TokenReader` is the app: a thread reading the token file in a tight loop for the
  whole test, recording every read that was empty, partial, or expired.

Waits poll at 20 ms here: the checks are cheap (a file, a local /status) or must catch a
short-lived state (a refresh under way), and the timeouts are short.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2

from tests import support
from tests.idp import OidcProvider
from tests.support import free_port, start_process, stop_process
from tests.support.faultproxy import FaultProxy, LoopThread, serve_https
from token_refresher_operator.devcert import write_self_signed
from token_refresher_operator.report import parse_report

__all__ = [
    "REPORT_BEARER",
    "ReportReceiver",
    "Sidecar",
    "SidecarFactory",
    "TokenReader",
    "jwt_exp",
    "parse_rfc3339",
    "wait_until",
]


SCRIPT = Path(sys.executable).with_name("token-refresher")
REPORT_BEARER = "report-bearer-CANARY"
POD = {"namespace": "faults", "pod": "app-0", "uid": "6a1f0e0c-0000-4000-8000-000000000001"}


# tests.support's one wait, at the fault suite's pace and silent (its waits are short).
wait_until = functools.partial(support.wait_until, every=0.02, note=None)


def parse_rfc3339(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def jwt_exp(token: str) -> float:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return float(claims["exp"])


# --- the report receiver -------------------------------------------------------------


@dataclass
class ReportReceiver:
    """Records the sidecar's failure reports; answers 202 (or `status`, if set)."""

    loop: LoopThread
    workdir: Path
    status: int = 202
    reports: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    port: int = 0
    _server: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> ReportReceiver:
        cert = write_self_signed(self.workdir)
        self.ca_file = cert.cert_file
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert.cert_file, cert.key_file)
        self.token_file = self.workdir / "report-token"
        self.token_file.write_text(REPORT_BEARER)
        self._server = self.loop.run(serve_https(self._handle, context=context))
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/report"

    def env(self) -> dict[str, str]:
        return {
            "REPORT_URL": self.url,
            "REPORT_CA_FILE": str(self.ca_file),
            "REPORT_TOKEN_FILE": str(self.token_file),
            "POD_NAMESPACE": POD["namespace"],
            "POD_NAME": POD["pod"],
            "POD_UID": POD["uid"],
        }

    async def _handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, bytes]:
        auth = next((v for k, v in headers if k.lower() == "authorization"), None)
        with self._lock:
            if (method, target) != ("POST", "/report"):
                self.problems.append(f"unexpected request {method} {target}")
            if auth != f"Bearer {REPORT_BEARER}":
                self.problems.append(f"report without the projected token: {auth!r}")
            try:
                parse_report(body)  # the operator's own parser: the contract holds
            except Exception as exc:
                self.problems.append(f"the operator would refuse {body!r}: {exc}")
            document = json.loads(body)
            document["received_at"] = time.monotonic()
            self.reports.append(document)
        return self.status, b'{"accepted": true}'

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.reports)

    def states(self) -> list[str]:
        return [r["state"] for r in self.received()]

    def wait_for(self, state: str, *, error: str | None = None, timeout: float = 10.0) -> dict:
        def find() -> dict[str, Any] | None:
            for report in self.received():
                if report["state"] == state and (error is None or report["error"] == error):
                    return report
            return None

        return wait_until(
            f"a {state!r} report ({error}); got {self.received()}", find, timeout=timeout
        )


# --- the sidecar ---------------------------------------------------------------------


@dataclass
class Sidecar:
    """One `token-refresher` daemon process; restartable with the same env."""

    env: dict[str, str]
    workdir: Path
    output: Path
    port: int
    preexec: list[str] = field(default_factory=list)  # e.g. setpriv ... before the script
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / f"sidecar-{self.runs}.log"

    def start(self, *, wait: bool = True) -> Sidecar:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        self.proc = start_process([*self.preexec, str(SCRIPT)], self.log_file, env=self.env)
        if wait:
            wait_until(f"the sidecar's /healthz on {self.base}", self._healthy, timeout=15)
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"the sidecar exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}"
            )
        try:
            return httpx2.get(self.base + "/healthz", timeout=5, trust_env=False).status_code == 200
        except httpx2.TransportError:
            return False

    def stop(self) -> int | None:
        """SIGTERM, as the kubelet does; the exit code."""
        if self.proc is None:
            return None
        stop_process(self.proc)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no cleanup, no summary, whatever it was doing."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def get(self, path: str) -> httpx2.Response:
        try:
            return httpx2.get(self.base + path, timeout=5, trust_env=False)
        except httpx2.TransportError:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"the sidecar exited with {self.proc.returncode}; its log ends:\n"
                    f"{self.log_text()[-3000:]}"
                ) from None
            raise

    def status(self) -> dict[str, Any]:
        return dict(self.get("/status").json())

    def readyz(self) -> int:
        return self.get("/readyz").status_code

    def metrics(self) -> dict[str, float]:
        """`name{labels}` -> value, from the Prometheus text: labels sorted by name, and
        the `token="default"` label every series of the (one) default token has left out."""
        values = {}
        for line in self.get("/metrics").text.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                name, _, labels = series.partition("{")
                pairs = sorted(
                    pair
                    for pair in re.findall(r'\w+="(?:[^"\\]|\\.)*"', labels)
                    if pair != 'token="default"'
                )
                values[name + ("{" + ",".join(pairs) + "}" if pairs else "")] = float(value)
        return values

    def attempts(self, outcome: str) -> float:
        return self.metrics().get(f'token_refresher_refresh_total{{outcome="{outcome}"}}', 0.0)

    def log_text(self, run: int | None = None) -> str:
        runs = [run] if run is not None else range(1, self.runs + 1)
        return "".join(
            (self.workdir / f"sidecar-{n}.log").read_text(errors="replace")
            for n in runs
            if (self.workdir / f"sidecar-{n}.log").exists()
        )

    def logs(self, run: int | None = None) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_text(run).splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
        return lines

    def wait_status(
        self, what: str, check: Callable[[dict[str, Any]], bool], *, timeout: float = 10.0
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status = self.status()
            return status if check(status) else None

        try:
            return wait_until(what, probe, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; /status: {self.status()}") from None


class SidecarFactory:
    """Builds sidecars for one test and stops every one of them at the end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[Sidecar] = []

    def __call__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        output: Path | None = None,
        workdir: Path | None = None,
        reports: ReportReceiver | None = None,
        preexec: list[str] | None = None,
        start: bool = True,
        **settings: Any,
    ) -> Sidecar:
        workdir = workdir or self.base / f"sidecar-{len(self.started)}"
        workdir.mkdir(parents=True, exist_ok=True)
        secret = workdir / "client-secret"
        secret.write_text(client_secret)
        secret.chmod(0o444)
        output = output or workdir / "out" / "token"
        output.parent.mkdir(parents=True, exist_ok=True)
        port = free_port()
        values: dict[str, Any] = {
            "TOKEN_URL": token_url,
            "CLIENT_ID": client_id,
            "CLIENT_SECRET_FILE": secret,
            "OUTPUT": output,
            "FORMAT": "json",
            "LISTEN": f"127.0.0.1:{port}",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
        }
        if reports is not None:
            values.update(reports.env())
        values.update({k.upper(): v for k, v in settings.items()})
        env = _clean_env()
        env.update({f"TOKEN_REFRESHER_{k}": str(v) for k, v in values.items()})
        sidecar = Sidecar(env, workdir, output, port, preexec=list(preexec or []))
        self.started.append(sidecar)
        return sidecar.start() if start else sidecar

    def for_idp(
        self, idp: OidcProvider, *, proxy: FaultProxy | None = None, **kwargs: Any
    ) -> Sidecar:
        """A sidecar of `idp`'s client-basic for its test resource, through `proxy` if given."""
        return self(
            token_url=f"{proxy.url}/token" if proxy is not None else idp.token_url,
            client_id=idp.basic.client_id,
            client_secret=idp.basic.client_secret or "",
            resource=idp.resource,
            **kwargs,
        )

    def close(self) -> None:
        for sidecar in self.started:
            sidecar.stop()


def _clean_env() -> dict[str, str]:
    # TOKEN_REFRESHER_TEST_RUN stays: it is how the leak guard finds our processes.
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TOKEN_REFRESHER_") or k == "TOKEN_REFRESHER_TEST_RUN"
    }


# --- the app -------------------------------------------------------------------------


@dataclass
class Read:
    at: float  # wall clock
    token: str
    expires_at: float
    exp: float


class TokenReader:
    """Reads the token file (FORMAT=json) as fast as it can until stopped.

    A read is a violation when the file is empty, not a whole JSON document, has no
    token, or — when `strict_expiry` — holds a token that has expired (by the file's
    `expires_at` or the JWT's `exp`), checked on the wall clock right after the read.
    A missing file, once a token has been read, is a violation only when `allow_missing`
    is false (`missing` counts those reads either way).
    """

    def __init__(
        self,
        path: Path,
        *,
        allow_missing: bool = True,
        strict_expiry: bool = True,
        expiry_grace: float = 0.0,
        on_read: Callable[[Read], None] | None = None,
    ) -> None:
        self.path = path
        self.allow_missing = allow_missing
        self.strict_expiry = strict_expiry
        self.expiry_grace = expiry_grace
        self.on_read = on_read
        self.reads = 0
        self.missing = 0
        self.tokens: dict[str, Read] = {}
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="token-reader", daemon=True)

    def __enter__(self) -> TokenReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _violation(self, text: str) -> None:
        if len(self.violations) < 50:
            self.violations.append(text)

    def _run(self) -> None:
        while not self._stop.is_set():
            before = time.time()
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                if self.reads:
                    self.missing += 1
                if self.reads and not self.allow_missing:
                    self._violation(f"{time.time():.3f}: no token file")
                time.sleep(0.001)
                continue
            self.reads += 1
            self._check(data, before)
            time.sleep(0.0005)

    def _check(self, data: bytes, now: float) -> None:
        if not data:
            self._violation(f"{now:.3f}: empty file")
            return
        try:
            document = json.loads(data)
            token = document["access_token"]
            expires_at = parse_rfc3339(document["expires_at"])
            exp = jwt_exp(token)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            self._violation(f"{now:.3f}: partial or garbled file ({exc}): {data[:80]!r}")
            return
        read = Read(now, token, expires_at, exp)
        self.tokens.setdefault(token, read)
        if self.strict_expiry and now >= min(expires_at, exp) + self.expiry_grace:
            self._violation(
                f"{now:.3f}: expired token (expires_at {expires_at:.0f}, exp {exp:.0f})"
            )
        if self.on_read is not None:
            self.on_read(read)
