"""Issue 13 on the real node: one refresh-token family shared by a Deployment's pods.

The IdP (oidc-provider, on the host) rotates refresh tokens and revokes the whole family
when a used one comes back; it logs a short hash of every refresh token presented to it,
so "never the same refresh token twice" is counted where it matters. The app in every
pod reads its token file every second and has the IdP introspect it: one call that finds
no token, or a token the IdP calls inactive, fails the test.

Without `family-secret`, two replicas from one bootstrap Secret kill the family (the
regression, as it happens on real pods). With it: 3 replicas, a rolling replacement of
every pod, a scale to 5 and back to 1, and the holder's pod deleted with no grace
period — with no replay and the family alive throughout.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.workloads import (
    RESOURCE_SERVER,
    P,
    Release,
    annotations,
    app_calls,
    bad_calls,
    installed,
    oauth_secret,
    pod_spec,
    pods_of,
    wait_ready,
)
from tests.idp import OidcProvider, OidcProviderFactory, default_oidc_clients
from tests.node import HOST_IP, Node, wait_until
from tests.rbac import family_rbac
from token_refresher.settings import Settings

pytestmark = [pytest.mark.node, pytest.mark.idp]

TTL = 10  # seconds: a refresh every ~5 s
FAMILY = "billing-oauth"
SERVICE_ACCOUNT = "billing"


@pytest.fixture(scope="module")
def release(node: Node) -> Iterator[Release]:
    with installed(node) as release:
        yield release


@pytest.fixture
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    # One IdP per test: its log is the count of refresh tokens presented.
    factory = OidcProviderFactory(tmp_path_factory.mktemp("e2e-family-idp"))
    yield factory.start(
        ttl=TTL,
        host=HOST_IP,
        access_token_format="opaque",
        clients=[*default_oidc_clients(), RESOURCE_SERVER],
    )
    factory.close()


def _workload(
    node: Node, namespace: str, idp: OidcProvider, *, replicas: int, family: bool
) -> dict[str, Any]:
    node.kubectl("-n", namespace, "create", "serviceaccount", SERVICE_ACCOUNT)
    oauth_secret(node, namespace, idp.basic)
    bootstrap = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": FAMILY, "namespace": namespace},
        "data": {"refresh": base64.b64encode(idp.refresh_token().encode()).decode()},
    }
    node.kubectl("apply", "-f", "-", input=json.dumps(bootstrap))
    if family:
        role, names = family_rbac(namespace, SERVICE_ACCOUNT)
        assert names == [FAMILY]
        node.kubectl("apply", "-f", "-", input=role)
    notes = {
        **annotations(idp, idp.basic),
        P + "grant": "refresh_token",
        P + "refresh-token": f"{FAMILY}/refresh",
        P + "refresh-ratio": "0.5",
    }
    if family:
        notes[P + "family-secret"] = FAMILY
    spec = pod_spec(node, idp)
    spec["serviceAccountName"] = SERVICE_ACCOUNT
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "billing", "namespace": namespace},
        "spec": {
            "replicas": replicas,
            # One pod at a time, the new one Ready before an old one goes.
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "selector": {"matchLabels": {"app": "billing"}},
            "template": {
                "metadata": {"labels": {"app": "billing"}, "annotations": notes},
                "spec": spec,
            },
        },
    }


class Apps:
    """Every app call of every pod seen so far, read before a pod goes away."""

    def __init__(self, node: Node, namespace: str) -> None:
        self.node, self.namespace = node, namespace
        self.calls: dict[str, list[dict[str, Any]]] = {}
        self.sidecar_logs: dict[str, str] = {}

    def pods(self) -> list[str]:
        return [p["metadata"]["name"] for p in pods_of(self.node, self.namespace, "app=billing")]

    def collect(self) -> None:
        for pod in self.pods():
            calls = app_calls(self.node, self.namespace, pod)
            if len(calls) >= len(self.calls.get(pod, [])):
                self.calls[pod] = calls
            # Kept for a failure's message: a pod scaled away takes its log with it.
            log = self.node.kubectl(
                "-n", self.namespace, "logs", pod, "-c", "token-refresher", check=False
            ).stdout
            if len(log) >= len(self.sidecar_logs.get(pod, "")):
                self.sidecar_logs[pod] = log

    def assert_always_valid(self) -> None:
        self.collect()
        for pod, calls in self.calls.items():
            bad = bad_calls(calls)
            assert not bad, (
                f"{pod}: the app read a missing, expired or rejected token: {bad[:3]} "
                f"({len(bad)} in all)\n{self._story()}"
            )

    def _story(self) -> str:
        """Every pod's sidecar log (redacted by the sidecar itself): who held the family,
        who waited, and what each said when the app found no token."""
        return "\n".join(
            f"--- sidecar of {pod} ---\n{log.rstrip()[-6000:]}"
            for pod, log in self.sidecar_logs.items()
        )

    def tokens_seen(self, pod: str) -> int:
        return len({c["sha"] for c in app_calls(self.node, self.namespace, pod) if "sha" in c})


def _family(node: Node, namespace: str) -> dict[str, Any]:
    secret = json.loads(node.kubectl("-n", namespace, "get", "secret", FAMILY, "-o", "json").stdout)
    raw = secret["data"].get("token-refresher-family")
    return json.loads(base64.b64decode(raw)) if raw else {}


def _holder(node: Node, namespace: str) -> str | None:
    """The holding pod's name (the family names it `<pod>@<uid prefix>`)."""
    holder = _family(node, namespace).get("holder")
    return holder.partition("@")[0] if holder else None


def _rotations(node: Node, namespace: str) -> int:
    return int(_family(node, namespace).get("rotations", 0))


# A holder that vanished while presenting is replaced once its claim (FAMILY_LEASE) runs
# out, so a wait that spans a change of holder allows for it.
FAMILY_LEASE = Settings.model_fields["family_lease"].default


def _wait_rotations(node: Node, namespace: str, n: int) -> None:
    start = _rotations(node, namespace)
    wait_until(
        f"{n} more rotations of the family",
        lambda: _rotations(node, namespace) >= start + n,
        FAMILY_LEASE + TTL * (n + 3),
    )


def _assert_no_replay(idp: OidcProvider) -> None:
    uses = idp.refresh_token_uses()
    assert uses, "the IdP saw no refresh token at all"
    replayed = {sha: n for sha, n in uses.items() if n > 1}
    assert not replayed, f"the IdP saw refresh tokens more than once: {replayed}"
    assert idp.revoked_grants() == [], "the IdP revoked the family"


def _scale(node: Node, namespace: str, replicas: int, apps: Apps) -> None:
    apps.collect()  # before any pod goes
    node.kubectl("-n", namespace, "scale", "deployment/billing", f"--replicas={replicas}")
    wait_ready(node, namespace, "billing")
    wait_until(f"{replicas} pods", lambda: len(apps.pods()) == replicas, 120)


def test_without_a_family_two_replicas_from_one_secret_kill_the_family(
    node: Node, node_namespace: str, release: Release, idp: OidcProvider
) -> None:
    # Today's behaviour without the annotation, on real pods: the regression.
    workload = _workload(node, node_namespace, idp, replicas=2, family=False)
    node.kubectl("apply", "-f", "-", input=json.dumps(workload))
    wait_until("the IdP revoking the family", idp.revoked_grants, TTL * 6)
    assert max(idp.refresh_token_uses().values()) >= 2


@pytest.mark.timeout(900)
def test_replicas_rollouts_scaling_and_a_deleted_holder_keep_one_family_alive(
    node: Node, node_namespace: str, release: Release, idp: OidcProvider
) -> None:
    namespace = node_namespace
    workload = _workload(node, namespace, idp, replicas=3, family=True)
    node.kubectl("apply", "-f", "-", input=json.dumps(workload))
    wait_ready(node, namespace, "billing")
    apps = Apps(node, namespace)
    assert len(apps.pods()) == 3
    _wait_rotations(node, namespace, 2)
    # Every replica serves the holder's token: the same tokens everywhere.
    for pod in apps.pods():
        wait_until(f"{pod} reading a refreshed token", lambda p=pod: apps.tokens_seen(p) >= 2, 60)
    apps.assert_always_valid()
    holder = _holder(node, namespace)
    assert holder in apps.pods()

    # A rolling replacement of every pod, one by one.
    apps.collect()
    node.kubectl("-n", namespace, "rollout", "restart", "deployment/billing")
    wait_ready(node, namespace, "billing", timeout=300)
    _wait_rotations(node, namespace, 2)
    apps.assert_always_valid()

    # Scale to 5 and back to 1.
    _scale(node, namespace, 5, apps)
    _wait_rotations(node, namespace, 1)
    apps.assert_always_valid()
    _scale(node, namespace, 1, apps)
    _wait_rotations(node, namespace, 2)
    apps.assert_always_valid()

    # Delete the holder's pod — the only one now — with no grace period: its
    # replacement takes the family over, from the rotated token in the Secret.
    holder = _holder(node, namespace)
    assert apps.pods() == [holder]
    apps.collect()
    node.kubectl("-n", namespace, "delete", "pod", holder, "--grace-period=0", "--force")
    wait_until(
        "another pod holding the family",
        lambda: _holder(node, namespace) not in (None, holder),
        TTL * 6,
    )
    wait_ready(node, namespace, "billing")
    _wait_rotations(node, namespace, 2)
    apps.assert_always_valid()

    _assert_no_replay(idp)
    family = _family(node, namespace)
    assert family["rejected"] is False
    assert family["rotations"] >= 10
