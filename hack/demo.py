"""The one-command demo (`make demo`): token-refresher end to end on a local control plane.

What a newcomer sees, in six acts, with no cluster and no Docker: a real kube-apiserver
and etcd, a real OpenID provider (oidc-provider) issuing 10-second tokens, the operator in
development mode, an annotated pod and the spec the webhook injected into it, the sidecar
run with exactly that spec keeping the token file fresh on one live line, and an IdP
outage turning into Warning events that `kubectl` shows. Whether it reaches its end or is
stopped with Ctrl-C, every process and temp dir it made is removed.
`--non-interactive` runs it unattended (CI does, in tests/test_demo.py).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.controlplane import ControlPlane, free_port, stop_process, tools  # noqa: E402
from tests.idp import OidcProvider, OidcProviderFactory  # noqa: E402
from tests.podrunner import prepare_sidecar  # noqa: E402

TTL = 10  # seconds: short, so refreshes happen while you watch
NAMESPACE = "demo"
POD = "billing-api"
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


class Demo:
    def __init__(self, *, interactive: bool, watch_seconds: float) -> None:
        self.interactive = interactive
        self.watch_seconds = watch_seconds
        self.workdir = Path(tempfile.mkdtemp(prefix="token-refresher-demo-"))
        self.cleanups: list[Callable[[], None]] = []
        self.act = 0

    # --- narration ---------------------------------------------------------------------

    def title(self, text: str) -> None:
        self.act += 1
        print(f"\n{BOLD}[{self.act}/6] {text}{RESET}", flush=True)

    def say(self, text: str) -> None:
        print(f"      {text}", flush=True)

    def pause(self) -> None:
        if self.interactive:
            with contextlib.suppress(EOFError):
                input(f"      {DIM}press Enter to go on (Ctrl-C stops and cleans up){RESET}")

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        next_note = time.monotonic() + 5
        while True:
            result = check()
            if result:
                return result
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")
            if now > next_note:
                self.say(f"{DIM}waiting for {what}: {deadline - now:.0f} s left{RESET}")
                next_note = now + 5
            time.sleep(0.25)

    # --- the acts ----------------------------------------------------------------------

    def run(self) -> None:
        self.title("a real control plane: etcd + kube-apiserver, built from Go modules")
        self.say("tools are built once and cached in ~/.cache/token-refresher (hack/tools.sh)")
        cluster = ControlPlane(tools(build=True), workdir=self.workdir / "cluster").start()
        self.cleanups.append(cluster.stop)
        self.say(cluster.kubectl("version").stdout.strip().splitlines()[-1])

        self.title(f"a real OpenID provider (oidc-provider) issuing {TTL}-second tokens")
        idps = OidcProviderFactory(self.workdir / "idp")
        self.cleanups.append(idps.close)
        idp = idps.start(ttl=TTL)
        client = idp.basic
        self.say(f"issuer {idp.issuer}, client '{client.client_id}' (client_secret_basic)")

        self.title("the operator, in development mode (self-signed webhook on 127.0.0.1)")
        self.start_operator(cluster)
        self.pause()

        self.title(f"an annotated pod: {NAMESPACE}/{POD}")
        pod = self.create_pod(cluster, idp)
        self.show_injection(pod)
        self.pause()

        self.title("the sidecar, run with exactly the injected spec, keeps the file fresh")
        sidecar = prepare_sidecar(cluster, pod, self.workdir / "pod")
        token_file = sidecar.local(self.app_env(pod)["TOKEN_FILE"])
        proc = sidecar.start(
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "sidecar.log").open("wb"),
        )
        self.cleanups.append(lambda: stop_process(proc))
        status_url = f"http://127.0.0.1:{sidecar.port}/status"
        self.wait_for("the first token file", token_file.exists, 30)
        self.say(f"TOKEN_FILE={self.app_env(pod)['TOKEN_FILE']} (shown as a fingerprint)")
        self.live(status_url, token_file, seconds=self.watch_seconds)
        self.pause()

        self.title("the IdP goes down: the failure reaches the pod as Kubernetes Events")
        idp.stop()
        self.say("oidc-provider stopped; the sidecar keeps the last good token and retries")
        self.live(status_url, token_file, seconds=4)
        events = self.wait_for(
            "a TokenRefreshFailed event", lambda: self.events(cluster, "TokenRefreshFailed"), 60
        )
        self.say(f"$ kubectl get events -n {NAMESPACE} --field-selector involvedObject.name={POD}")
        for line in events.splitlines():
            self.say(line)
        self.say("when the token expires with no refresh, the file is removed:")
        self.wait_for("the token to expire", lambda: not token_file.exists(), TTL + 30)
        self.wait_for("a TokenExpired event", lambda: self.events(cluster, "TokenExpired"), 60)
        self.say("TokenExpired event posted; /readyz now answers 503")
        self.say("the IdP comes back:")
        idp.start()
        self.wait_for(
            "the sidecar's next attempt (its backoff is capped at 60 s)", token_file.exists, 90
        )
        events = self.wait_for(
            "a TokenRefreshRecovered event",
            lambda: self.events(cluster, "TokenRefreshRecovered"),
            60,
        )
        for line in events.splitlines():
            self.say(line)
        print(f"\n{BOLD}done.{RESET} Everything this demo started is being stopped and removed.")

    # --- helpers -----------------------------------------------------------------------

    def start_operator(self, cluster: ControlPlane) -> None:
        health = free_port()
        # Cluster-wide defaults, as the chart's values would give them; the report URL and
        # CA are filled in by development mode (this very process, its own certificate).
        config = self.workdir / "operator-config.yaml"
        config.write_text("defaults:\n  format: raw\n  refresh-ratio: '0.5'\n")
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "TOKEN_REFRESHER_OPERATOR_DEV": "true",
            "TOKEN_REFRESHER_OPERATOR_NAMESPACE": "token-refresher",
            "TOKEN_REFRESHER_OPERATOR_LISTEN_HOST": "127.0.0.1",
            "TOKEN_REFRESHER_OPERATOR_WEBHOOK_PORT": str(free_port()),
            "TOKEN_REFRESHER_OPERATOR_REPORT_PORT": str(free_port()),
            "TOKEN_REFRESHER_OPERATOR_HEALTH_PORT": str(health),
            "TOKEN_REFRESHER_OPERATOR_CONFIG_FILE": str(config),
        }
        log = (self.workdir / "operator.log").open("wb")
        script = Path(sys.executable).with_name("token-refresher-operator")
        proc = subprocess.Popen(
            [str(script)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.cleanups.append(lambda: stop_process(proc))

        def ready() -> bool:
            if proc.poll() is not None:
                tail = (self.workdir / "operator.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the operator exited ({proc.returncode}):\n{tail}")
            got = cluster.kubectl(
                "get", "mutatingwebhookconfiguration", "token-refresher-dev", check=False
            )
            return got.returncode == 0 and _http_ok(f"http://127.0.0.1:{health}/healthz")

        self.wait_for("the operator's webhook registration", ready, 60)
        self.say("MutatingWebhookConfiguration token-refresher-dev: only pods annotated")
        self.say('token-refresher.io/inject: "true" are sent to it (matchConditions)')

    def create_pod(self, cluster: ControlPlane, idp: OidcProvider) -> dict[str, Any]:
        client = idp.basic
        cluster.kubectl("create", "namespace", NAMESPACE)
        cluster.kubectl("-n", NAMESPACE, "create", "serviceaccount", "billing")
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "billing-oauth", "namespace": NAMESPACE},
            "data": {"secret": base64.b64encode((client.client_secret or "").encode()).decode()},
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": POD,
                "namespace": NAMESPACE,
                "annotations": {
                    "token-refresher.io/inject": "true",
                    "token-refresher.io/issuer": idp.issuer,
                    "token-refresher.io/client-id": client.client_id,
                    "token-refresher.io/client-secret": "billing-oauth/secret",
                    "token-refresher.io/resource": idp.resource,
                    "token-refresher.io/scope": "api:read",
                },
            },
            "spec": {
                "serviceAccountName": "billing",
                "containers": [{"name": "app", "image": "registry.example/billing-api:1.4"}],
            },
        }
        self.say("$ kubectl apply -f - <<EOF")
        for key, value in manifest["metadata"]["annotations"].items():
            self.say(f"    {key}: {value}")
        cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        out = cluster.kubectl("-n", NAMESPACE, "get", "pod", POD, "-o", "json").stdout
        return dict(json.loads(out))

    def show_injection(self, pod: dict[str, Any]) -> None:
        sidecar = next(c for c in pod["spec"]["initContainers"] if c["name"] == "token-refresher")
        shown = {
            "initContainers[token-refresher]": {
                "restartPolicy": sidecar.get("restartPolicy"),
                "image": sidecar.get("image"),
                "env": {
                    e["name"]: _abridge(e.get("value", "<downward API>"))
                    for e in sidecar.get("env", [])
                },
                "volumeMounts": [
                    f"{m['mountPath']} ({m['name']}{', ro' if m.get('readOnly') else ''})"
                    for m in sidecar.get("volumeMounts", [])
                ],
                "securityContext": sidecar.get("securityContext"),
                "startupProbe": sidecar.get("startupProbe", {}).get("httpGet"),
            },
            "containers[app]": {
                "env": self.app_env(pod),
                "volumeMounts": [
                    f"{m['mountPath']} ({m['name']}{', ro' if m.get('readOnly') else ''})"
                    for m in pod["spec"]["containers"][0].get("volumeMounts", [])
                ],
            },
            "volumes": [
                f"{v['name']}: {next(k for k in v if k != 'name')}" for v in pod["spec"]["volumes"]
            ],
        }
        self.say("the webhook injected (kubectl get pod -o json, abridged):")
        for line in json.dumps(shown, indent=2).splitlines():
            self.say(f"  {line}")

    @staticmethod
    def app_env(pod: dict[str, Any]) -> dict[str, str]:
        app = pod["spec"]["containers"][0]
        return {e["name"]: e["value"] for e in app.get("env", []) if "value" in e}

    def live(self, status_url: str, token_file: Path, *, seconds: float) -> None:
        """One live line: which token (by fingerprint), its countdown, the refresh count."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                status = json.loads(_http_get(status_url))
            except OSError:
                status = {}
            try:
                fingerprint = hashlib.sha256(token_file.read_bytes()).hexdigest()[:10]
            except FileNotFoundError:
                fingerprint = "(no file)"
            left = "-"
            if status.get("expires_at"):
                expires = _parse_time(status["expires_at"])
                left = f"{max(0.0, expires - time.time()):4.1f} s"
            line = (
                f"token sha256:{fingerprint} · expires in {left} · "
                f"refreshed {status.get('refresh_count', 0)} times · "
                f"failures in a row {status.get('consecutive_failures', 0)} · "
                f"state {status.get('state', '?')}"
            )
            end_char = "\r" if sys.stdout.isatty() else "\n"
            print(f"      {line:<110}", end=end_char, flush=True)
            time.sleep(0.2 if sys.stdout.isatty() else 2.0)
        print(flush=True)

    @staticmethod
    def events(cluster: ControlPlane, reason: str) -> str:
        out = cluster.kubectl(
            "-n", NAMESPACE, "get", "events",
            f"--field-selector=involvedObject.name={POD},reason={reason}",
            "-o", "custom-columns=TYPE:.type,REASON:.reason,COUNT:.series.count,MESSAGE:.message",
            check=False,
        ).stdout  # fmt: skip
        return out if reason in out else ""

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        if os.environ.get("TOKEN_REFRESHER_DEMO_KEEP"):  # for debugging the demo itself
            print(f"kept {self.workdir}", file=sys.stderr)
            return
        shutil.rmtree(self.workdir, ignore_errors=True)


def _abridge(value: str) -> str:
    return value if len(value) <= 60 else f"{value[:28]}…({len(value)} characters)"


def _http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our own http URLs
        return bytes(resp.read())


def _http_ok(url: str) -> bool:
    try:
        _http_get(url)
    except OSError:
        return False
    return True


def _parse_time(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@contextlib.contextmanager
def _demo(**kwargs: Any) -> Iterator[Demo]:
    demo = Demo(**kwargs)
    try:
        yield demo
    finally:
        demo.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--non-interactive", action="store_true", help="never wait for Enter (CI, scripts)"
    )
    parser.add_argument(
        "--watch", type=float, default=25.0, help="seconds to watch the token refresh"
    )
    args = parser.parse_args()
    interactive = not args.non_interactive and sys.stdin.isatty()
    try:
        with _demo(interactive=interactive, watch_seconds=args.watch) as demo:
            demo.run()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything the demo started", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
