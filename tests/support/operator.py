"""The operator as its users run it: the real `token-refresher-operator` console script.

It runs as a subprocess (its own process group) with free ports on 127.0.0.1 and
KUBECONFIG pointing at a test control plane. In DEV mode it serves a self-signed
`/mutate` and registers the MutatingWebhookConfiguration `token-refresher-dev` itself;
`start_operator` waits for that configuration to point at this process's port, and for
the ports to listen, saying what it waits for. Its log is kept in a file: the
admission-call lines in it are how tests prove which pods reached the webhook. The
operator tests, the fault tests, the chart tests and the benchmarks all start it here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.net import free_port, listening
from tests.support.processes import start_process, stop_process
from tests.support.wait import WaitTimeout, wait_until

if TYPE_CHECKING:
    # Only a type here: tests.controlplane imports this package for its helpers.
    from tests.controlplane import ControlPlane

__all__ = [
    "DEV_CONFIGURATION",
    "OPERATOR_NAMESPACE",
    "SIDECAR_IMAGE",
    "AdmissionCall",
    "OperatorProcess",
    "start_operator",
    "stop_operator",
]

DEV_CONFIGURATION = "token-refresher-dev"
OPERATOR_NAMESPACE = "token-refresher"
SIDECAR_IMAGE = "registry.test/token-refresher:test"
_ADMISSION = re.compile(r"admission request (\d+): (\S+) (\S+) (\S*)/(\S+?)( \(dry run\))?$")


def _say(msg: str) -> None:
    print(f"[operator {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class AdmissionCall:
    """One line `admission request N: CREATE pods ns/name` of the operator's log."""

    number: int
    operation: str
    resource: str
    namespace: str
    name: str
    dry_run: bool


@dataclass
class OperatorProcess:
    """A running `token-refresher-operator --dev`; see the module docstring."""

    proc: subprocess.Popen[bytes]
    cluster: ControlPlane
    workdir: Path
    log_file: Path
    config_file: Path
    webhook_port: int
    report_port: int
    health_port: int
    namespace: str = OPERATOR_NAMESPACE

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def admission_calls(self) -> list[AdmissionCall]:
        calls = []
        for line in self.log().splitlines():
            m = _ADMISSION.search(line)
            if m:
                calls.append(
                    AdmissionCall(int(m[1]), m[2], m[3], m[4], m[5], dry_run=m[6] is not None)
                )
        return calls

    def calls_for(self, namespace: str, name: str) -> list[AdmissionCall]:
        return [c for c in self.admission_calls() if (c.namespace, c.name) == (namespace, name)]

    def wait_for(self, what: str, check: Callable[[], Any], *, timeout: float = 30.0) -> Any:
        """Poll `check` until it returns something truthy; fail with the log tail, also
        as soon as the operator exits."""

        def alive_and(check: Callable[[], Any] = check) -> Any:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"operator exited ({self.proc.returncode}) while waiting for {what}:\n"
                    f"{self.log()[-4000:]}"
                )
            return check()

        try:
            return wait_until(what, alive_and, timeout, every=0.2, note=_say, note_every=5)
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}; operator log tail:\n{self.log()[-4000:]}") from None

    def health(self) -> dict[str, Any]:
        """The liveness endpoint: the `admission` counters."""
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as resp:
            result: dict[str, Any] = json.load(resp)
            return result

    def metrics(self) -> str:
        """What Prometheus scrapes: /metrics on the health port."""
        url = f"http://127.0.0.1:{self.health_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return str(resp.read().decode())

    def webhook_configuration(self) -> dict[str, Any] | None:
        proc = self.cluster.kubectl(
            "get", "mutatingwebhookconfiguration", DEV_CONFIGURATION, "-o", "json", check=False
        )
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def registered(self) -> bool:
        """The dev webhook configuration exists and points at this process."""
        body = self.webhook_configuration()
        want = f"https://127.0.0.1:{self.webhook_port}/mutate"
        return bool(body) and body["webhooks"][0]["clientConfig"].get("url") == want  # type: ignore[index]


def start_operator(
    cluster: ControlPlane,
    workdir: Path,
    *,
    config: str | None = None,
    timeout: float = 60.0,
    tls: tuple[Path, Path] | None = None,
    env: Mapping[str, str] | None = None,
) -> OperatorProcess:
    """Start the operator in DEV mode and wait until the apiserver can call it.

    With `tls` (serving certificate and key files, laid out as the kubelet mounts a TLS
    Secret) it runs as the chart runs it instead: not in DEV mode, serving those files, and
    registering no webhook configuration (the caller does); it waits for the ports only.
    `env` adds or overrides variables (the benchmarks quieten the log level).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "config.yaml"
    config_file.write_text(
        config
        if config is not None
        else f"defaults:\n  format: raw\nsidecar:\n  image: {SIDECAR_IMAGE}\n  port: 8099\n"
    )
    log_file = workdir / "operator.log"
    webhook_port, report_port, health_port = free_port(), free_port(), free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_REFRESHER_OPERATOR_")}
    environ.update(
        {
            "KUBECONFIG": str(cluster.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "TOKEN_REFRESHER_OPERATOR_DEV": "true" if tls is None else "false",
            "TOKEN_REFRESHER_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
            "TOKEN_REFRESHER_OPERATOR_LISTEN_HOST": "127.0.0.1",
            "TOKEN_REFRESHER_OPERATOR_WEBHOOK_PORT": str(webhook_port),
            "TOKEN_REFRESHER_OPERATOR_REPORT_PORT": str(report_port),
            "TOKEN_REFRESHER_OPERATOR_HEALTH_PORT": str(health_port),
            "TOKEN_REFRESHER_OPERATOR_CONFIG_FILE": str(config_file),
        }
    )
    if tls is not None:
        environ["TOKEN_REFRESHER_OPERATOR_TLS_CERT_FILE"] = str(tls[0])
        environ["TOKEN_REFRESHER_OPERATOR_TLS_KEY_FILE"] = str(tls[1])
    environ.update(env or {})
    script = Path(sys.executable).with_name("token-refresher-operator")
    mode = "DEV" if tls is None else f"serving {tls[0]}"
    _say(f"starting {script.name} ({mode}, webhook port {webhook_port}); log: {log_file}")
    proc = start_process([str(script)], log_file, env=environ)
    op = OperatorProcess(
        proc=proc,
        cluster=cluster,
        workdir=workdir,
        log_file=log_file,
        config_file=config_file,
        webhook_port=webhook_port,
        report_port=report_port,
        health_port=health_port,
    )
    try:
        if tls is None:
            op.wait_for(
                f"MutatingWebhookConfiguration {DEV_CONFIGURATION} -> 127.0.0.1:{webhook_port}",
                op.registered,
                timeout=timeout,
            )
        op.wait_for(
            f"webhook port {webhook_port} to listen",
            lambda: listening(webhook_port),
            timeout=timeout,
        )
        op.wait_for(f"health port {health_port} to listen", lambda: listening(health_port))
    except BaseException:
        stop_operator(op)
        raise
    _say("operator ready")
    return op


def stop_operator(op: OperatorProcess) -> None:
    # SIGTERM to the process group: kopf runs its cleanup (DEV: deletes the webhook
    # configuration) and the report endpoint drains; that takes a few seconds.
    stop_process(op.proc, grace=20.0)
