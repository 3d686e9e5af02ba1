"""The one-command demo (`make demo`): token-refresher as it is deployed, on a real node.

What a newcomer sees, in six acts: a real one-node Kubernetes on this machine (kubelet,
containerd, kube-proxy, CoreDNS, built from Go modules), a real OpenID provider
(oidc-provider) issuing 10-second tokens, `helm install --wait` of the chart from images
built from our Dockerfile, an annotated Deployment and what the webhook injected into it,
`kubectl exec` into the app to read the token and have the IdP accept it while the
sidecar refreshes it, and an IdP outage turning into Events that `kubectl` shows.
Whether it reaches its end or is stopped with Ctrl-C, everything it started is stopped
and the machine is put back as it was. `--non-interactive` runs it unattended (CI does,
in tests/test_demo.py, on the suite's node: TOKEN_REFRESHER_NODE).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.controlplane import tools
from tests.e2e.workloads import (
    RESOURCE_SERVER,
    deployment,
    installed,
    oauth_secret,
    pods_of,
    wait_ready,
)
from tests.idp import OidcProvider, OidcProviderFactory, default_oidc_clients
from tests.images import images
from tests.node import HOST_IP, Node
from tests.support import wait_until

TTL = 10  # seconds: short, so refreshes happen while you watch
NAMESPACE = "demo"
APP = "billing"
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")

# Runs in the app container (kubectl exec): what the app sees, and what the sidecar says.
_PEEK = (Path(__file__).parent / "demo_peek.py").read_text()


class Demo:
    def __init__(self, *, interactive: bool, watch_seconds: float) -> None:
        self.interactive = interactive
        self.watch_seconds = watch_seconds
        self.workdir = Path(tempfile.mkdtemp(prefix="token-refresher-demo-"))
        # Whatever the demo starts is entered here and undone, last first, by close().
        self.stack = contextlib.ExitStack()
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
        return wait_until(what, check, timeout, note=lambda msg: self.say(f"{DIM}{msg}{RESET}"))

    def show_events(self, node: Node, pod: str, reason: str | None = None) -> None:
        selector = f"involvedObject.name={pod}" + (f",reason={reason}" if reason else "")
        self.shell(node, "-n", NAMESPACE, "get", "events", "--field-selector", selector)

    def shell(self, node: Node, *args: str) -> str:
        self.say(f"$ kubectl {' '.join(args)}")
        out = node.kubectl(*args).stdout
        for line in out.rstrip().splitlines():
            self.say(f"  {line}")
        return out

    # --- the acts ----------------------------------------------------------------------

    def run(self) -> None:
        self.title("a real one-node Kubernetes: kubelet, containerd, kube-proxy, CoreDNS")
        node = self.node()
        self.shell(node, "get", "nodes", "-o", "wide")

        self.title(f"a real OpenID provider (oidc-provider) issuing {TTL}-second tokens")
        idps = OidcProviderFactory(self.workdir / "idp")
        self.stack.callback(idps.close)
        # Opaque tokens, so the IdP can tell whether the one the app holds is active.
        idp = idps.start(
            ttl=TTL,
            host=HOST_IP,
            access_token_format="opaque",
            clients=[*default_oidc_clients(), RESOURCE_SERVER],
        )
        self.say(f"issuer {idp.issuer} (on the pod bridge: pods reach it, nothing else does)")

        self.title("helm install --wait: the operator (2 replicas) from our images")
        self.say(
            f"$ helm install tr charts/token-refresher -n token-refresher --wait "
            f"--set image.tag={node.image('operator').rpartition(':')[2]} ..."
        )
        self.stack.enter_context(installed(node))
        self.shell(node, "-n", "token-refresher", "get", "pods")
        self.pause()

        self.title(f"an annotated Deployment: {NAMESPACE}/{APP}, 2 replicas")
        pod = self.create_app(node, idp)
        self.show_injection(pod)
        self.pause()

        self.title("kubectl exec into the app: it reads $TOKEN_FILE, the IdP accepts it")
        name = pod["metadata"]["name"]
        self.say(f"$ kubectl exec {name} -c app -- python -c <read the token, ask the IdP>")
        self.live(node, name, seconds=self.watch_seconds)
        self.pause()

        self.title("the IdP goes down: the failure reaches the pod as Kubernetes Events")
        idp.stop()
        self.say("oidc-provider stopped; the sidecar keeps the last good token and retries,")
        self.say("and reports to the operator's Service, which posts Events on the pod")
        self.wait_for("a TokenRefreshFailed Event", lambda: self.events(node, name, "Failed"), 60)
        self.show_events(node, name, "TokenRefreshFailed")
        self.say("the IdP comes back:")
        idp.start()
        self.wait_for(
            "a TokenRefreshRecovered Event (the sidecar's backoff is capped at 60 s)",
            lambda: self.events(node, name, "Recovered"),
            90,
        )
        self.show_events(node, name)
        self.live(node, name, seconds=4)
        print(f"\n{BOLD}done.{RESET} Everything this demo started is being stopped and removed.")

    # --- helpers -----------------------------------------------------------------------

    def node(self) -> Node:
        if descriptor := os.environ.get("TOKEN_REFRESHER_NODE"):
            self.say(f"using the node already running ({descriptor})")
            return Node.attach(Path(descriptor), tools())
        self.say("tools and images are built once and cached in ~/.cache/token-refresher")
        return self.stack.enter_context(Node(tools(build=True), images(build=True)))

    def create_app(self, node: Node, idp: OidcProvider) -> dict[str, Any]:
        node.kubectl("create", "namespace", NAMESPACE)
        self.stack.callback(
            node.kubectl, "delete", "namespace", NAMESPACE, "--wait=false", check=False
        )
        oauth_secret(node, NAMESPACE, idp.basic)
        manifest = deployment(node, NAMESPACE, idp, idp.basic, replicas=2)
        manifest["metadata"]["name"] = APP
        self.say("$ kubectl apply -f - <<EOF   (the pod template's annotations)")
        for key, value in manifest["spec"]["template"]["metadata"]["annotations"].items():
            self.say(f"    {key}: {value}")
        node.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        wait_ready(node, NAMESPACE, APP)
        self.shell(node, "-n", NAMESPACE, "get", "pods", "-o", "wide")
        return pods_of(node, NAMESPACE, "app=billing")[0]

    def show_injection(self, pod: dict[str, Any]) -> None:
        sidecar = next(c for c in pod["spec"]["initContainers"] if c["name"] == "token-refresher")
        app = pod["spec"]["containers"][0]
        shown = {
            "initContainers[token-refresher]": {
                "restartPolicy": sidecar.get("restartPolicy"),
                "image": sidecar.get("image"),
                "env": {
                    e["name"]: _abridge(e.get("value", "<downward API>"))
                    for e in sidecar.get("env", [])
                },
                "securityContext": sidecar.get("securityContext"),
                "startupProbe": sidecar.get("startupProbe", {}).get("httpGet"),
            },
            "containers[app]": {
                "env": {e["name"]: e["value"] for e in app["env"] if e["name"] == "TOKEN_FILE"},
                "volumeMounts": [
                    f"{m['mountPath']} ({m['name']}{', ro' if m.get('readOnly') else ''})"
                    for m in app.get("volumeMounts", [])
                ],
            },
        }
        self.say("the webhook injected (kubectl get pod -o json, abridged):")
        for line in json.dumps(shown, indent=2).splitlines():
            self.say(f"  {line}")

    def live(self, node: Node, pod: str, *, seconds: float) -> None:
        """What the app sees, every few seconds: which token (by fingerprint), whether the
        IdP accepts it, its countdown, and the sidecar's refresh count."""
        end = time.monotonic() + seconds
        while True:
            out = node.kubectl(
                "-n", NAMESPACE, "exec", pod, "-c", "app", "--", "python", "-c", _PEEK, check=False
            )
            try:
                seen = json.loads(out.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                self.say(f"(exec failed: {out.stderr.strip()[:100]})")
            else:
                left = "-"
                if seen.get("expires_at"):
                    left = f"{max(0.0, _parse_time(seen['expires_at']) - time.time()):4.1f} s"
                self.say(
                    f"token sha256:{seen['sha']} · IdP says active={seen['active']} · "
                    f"expires in {left} · refreshed {seen['refreshes']} times · "
                    f"failures in a row {seen['failures']} · state {seen['state']}"
                )
            if time.monotonic() >= end:
                return
            time.sleep(2.0)

    @staticmethod
    def events(node: Node, pod: str, outcome: str) -> bool:
        out = node.kubectl(
            "-n",
            NAMESPACE,
            "get",
            "events",
            "-o",
            "name",
            "--field-selector",
            f"involvedObject.name={pod},reason=TokenRefresh{outcome}",
            check=False,
        ).stdout
        return bool(out.strip())

    def close(self) -> None:
        try:
            self.stack.close()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _abridge(value: str) -> str:
    return value if len(value) <= 60 else f"{value[:28]}…({len(value)} characters)"


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

    def terminated(*_: object) -> None:
        raise KeyboardInterrupt  # clean up as after Ctrl-C

    signal.signal(signal.SIGTERM, terminated)
    try:
        with _demo(interactive=interactive, watch_seconds=args.watch) as demo:
            demo.run()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything the demo started", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
