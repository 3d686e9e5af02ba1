"""What the end-to-end tests deploy on the node: the chart from our images, an IdP on the
host that pods reach at the bridge address, and annotated workloads whose app reads the
token file and has the IdP check it.

The app container is a loop in the sidecar image's Python: every second it reads
$TOKEN_FILE and asks the IdP's introspection endpoint (RFC 7662) whether the token is
active, as an API that validates its callers' tokens would, with credentials of its own
(the `resource-server` client: the app still never sees the sidecar's). The token file
is in the `json` format, so the app also notes how long the token it read had left. It
prints one JSON line per call with a hash of the token, never the token.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.chart.helm import CHART
from tests.idp import OAuthClient, OidcProvider
from tests.node import HOST_IP, Node, wait_until

__all__ = [
    "APP_SCRIPT",
    "RELEASE",
    "RELEASE_NAMESPACE",
    "RESOURCE_SERVER",
    "RESTRICTED",
    "P",
    "Release",
    "annotations",
    "app_calls",
    "bad_calls",
    "deployment",
    "events_of",
    "injected_by_dry_run",
    "installed",
    "oauth_secret",
    "pod_spec",
    "pods_of",
]

RELEASE = "tr"
RELEASE_NAMESPACE = "token-refresher"
P = "token-refresher.io/"
# The API's own client at the IdP, used only to introspect the tokens it is shown.
RESOURCE_SERVER = OAuthClient("resource-server", "client_secret_basic", "resource-server-secret")

# The app's program, passed to `python -c` in the app container (the image has no copy).
APP_SCRIPT = (Path(__file__).parent / "app.py").read_text()

RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class Release:
    """The chart installed on the node from our images."""

    node: Node
    name: str = RELEASE
    namespace: str = RELEASE_NAMESPACE

    @property
    def deployment(self) -> str:
        return f"{self.name}-token-refresher"

    def operator_pods(self, *, terminating: bool = False) -> list[dict[str, Any]]:
        return pods_of(
            self.node, self.namespace, "app.kubernetes.io/component=operator", terminating
        )

    def scale(self, replicas: int) -> None:
        self.node.kubectl(
            "-n", self.namespace, "scale", "deployment", self.deployment, f"--replicas={replicas}"
        )
        self.node.kubectl(
            "-n",
            self.namespace,
            "rollout",
            "status",
            "deployment",
            self.deployment,
            "--timeout=120s",
            timeout=130,
        )
        # Terminating pods count until they are gone: one still draining serves /mutate
        # (kube-proxy sends traffic to terminating endpoints when no other is left).
        wait_until(
            f"{replicas} operator pods, none terminating",
            lambda: len(self.operator_pods(terminating=True)) == replicas,
            120,
        )


def image_values(node: Node) -> list[str]:
    """helm --set arguments that point the chart at the images built here."""
    args = []
    for key, name in (("image", "operator"), ("sidecar.image", "sidecar")):
        repo, _, tag = node.image(name).rpartition(":")
        args += [
            "--set",
            f"{key}.repository={repo}",
            "--set",
            f"{key}.tag={tag}",
            "--set",
            f"{key}.pullPolicy=Never",
        ]
    return args


@contextlib.contextmanager
def installed(node: Node, *extra: str, name: str = RELEASE) -> Iterator[Release]:
    """helm install --wait; on exit, helm uninstall --wait."""
    node.helm(
        "install",
        name,
        str(CHART),
        "-n",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout=300s",
        *image_values(node),
        *extra,
        timeout=320,
    )
    try:
        yield Release(node, name=name)
    finally:
        node.helm(
            "uninstall",
            name,
            "-n",
            RELEASE_NAMESPACE,
            "--wait",
            "--timeout=120s",
            check=False,
            timeout=130,
        )


def oauth_secret(node: Node, namespace: str, client: OAuthClient) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "oauth", "namespace": namespace},
        "data": {"secret": base64.b64encode((client.client_secret or "").encode()).decode()},
    }
    node.kubectl("apply", "-f", "-", input=json.dumps(secret))


def annotations(idp: OidcProvider, client: OAuthClient) -> dict[str, str]:
    return {
        P + "inject": "true",
        P + "issuer": idp.issuer,
        P + "client-id": client.client_id,
        P + "client-secret": "oauth/secret",
        P + "scope": "api:read",
        # The app notes each token's expiry, to tell a late call from a bad token.
        P + "format": "json",
        # Tokens here live seconds, not minutes: refreshing at half the lifetime (not the
        # default 0.7 ± 0.1) leaves seconds of margin on a machine loaded to its limit.
        P + "refresh-ratio": "0.5",
    }


def app_container(node: Node, idp: OidcProvider, *, once: bool = False) -> dict[str, Any]:
    env = [
        {"name": "INTROSPECTION_URL", "value": f"{idp.issuer}/token/introspection"},
        {"name": "RS_CREDENTIALS", "value": f"resource-server:{RESOURCE_SERVER.client_secret}"},
    ]
    if once:
        env.append({"name": "ONCE", "value": "1"})
    return {
        "name": "app",
        "image": node.image("sidecar"),
        "imagePullPolicy": "Never",
        "command": ["python", "-u", "-c", APP_SCRIPT],
        "env": env,
        "securityContext": RESTRICTED,
        "resources": {
            "requests": {"cpu": "5m", "memory": "24Mi"},
            "limits": {"memory": "64Mi"},
        },
    }


def pod_spec(node: Node, idp: OidcProvider, *, once: bool = False) -> dict[str, Any]:
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 2,
        "containers": [app_container(node, idp, once=once)],
        **({"restartPolicy": "Never"} if once else {}),
    }


def deployment(
    node: Node, namespace: str, idp: OidcProvider, client: OAuthClient, *, replicas: int = 3
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "billing", "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "billing"}},
            "template": {
                "metadata": {
                    "labels": {"app": "billing"},
                    "annotations": annotations(idp, client),
                },
                "spec": pod_spec(node, idp),
            },
        },
    }


def job(node: Node, namespace: str, idp: OidcProvider, client: OAuthClient) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "report-run", "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations(idp, client)},
                "spec": pod_spec(node, idp, once=True),
            },
        },
    }


def events_of(
    node: Node, namespace: str, pod: str, reason: str | None = None
) -> list[dict[str, Any]]:
    """The pod's Events (of one reason, when given), as `kubectl get events` lists them."""
    selector = f"involvedObject.name={pod}" + (f",reason={reason}" if reason else "")
    out = node.kubectl(
        "-n", namespace, "get", "events", "-o", "json", f"--field-selector={selector}"
    ).stdout
    return list(json.loads(out)["items"])


def pods_of(
    node: Node, namespace: str, selector: str, terminating: bool = False
) -> list[dict[str, Any]]:
    """The pods `selector` selects; those being deleted too when `terminating`."""
    out = node.kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json").stdout
    pods: list[dict[str, Any]] = json.loads(out)["items"]
    return [p for p in pods if terminating or not p["metadata"].get("deletionTimestamp")]


def app_calls(node: Node, namespace: str, pod: str) -> list[dict[str, Any]]:
    """The app's JSON lines so far (its whole log, across container restarts)."""
    out = node.kubectl("-n", namespace, "logs", pod, "-c", "app", check=False).stdout
    calls = []
    for line in out.splitlines():
        if line.startswith("{"):
            calls.append(json.loads(line))
    return calls


# A token read with less than this left may expire on its way to the IdP on a busy
# machine: that is the app's race with the clock (tokens here live seconds, not minutes),
# not a token the sidecar should not have served.
LATE = 1.5


def bad_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """App calls that show a fault: no token file, an expired token on disk, or a token
    the IdP rejected although it had time left.

    A call whose introspection never reached the IdP (three tries) says nothing about the
    token, as long as it had time left; but when more than a tenth of the calls go
    unjudged so, the check itself is blind, and those calls count as faults too."""
    faults = [
        c
        for c in calls
        if "error" in c
        or c["left"] <= 0
        or ("active" in c and not c["active"] and c["left"] >= LATE)
    ]
    unjudged = [c for c in calls if "unreachable" in c and c not in faults]
    if len(unjudged) * 10 > len(calls):
        faults += unjudged
    return faults


def wait_ready(node: Node, namespace: str, name: str, *, timeout: float = 180) -> None:
    node.kubectl(
        "-n",
        namespace,
        "rollout",
        "status",
        f"deployment/{name}",
        f"--timeout={int(timeout)}s",
        timeout=timeout + 10,
    )


def injected_by_dry_run(node: Node, namespace: str, name: str) -> dict[str, Any]:
    """An annotated pod sent through admission as a server-side dry run (the webhook is
    called through its Service; nothing is created): the pod as it would be stored."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {
                P + "inject": "true",
                P + "token-url": f"http://{HOST_IP}:1/token",
                P + "client-id": name,
            },
        },
        "spec": {"containers": [{"name": "app", "image": node.image("sidecar")}]},
    }
    out = node.kubectl(
        "apply", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(pod)
    ).stdout
    return dict(json.loads(out))
