"""The product as users run it, on the real node: `helm install --wait` from our images,
an annotated Deployment whose app reads the token and has the IdP accept it, and the
things a cluster does to pods — Pod Security, Jobs, killed processes, a restarted
kubelet, lost operator pods, rollouts — with the token never lost."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.workloads import (
    RELEASE_NAMESPACE,
    RESOURCE_SERVER,
    Release,
    app_calls,
    bad_calls,
    deployment,
    events_of,
    installed,
    job,
    oauth_secret,
    pods_of,
    wait_ready,
)
from tests.idp import OidcProvider, OidcProviderFactory, default_oidc_clients
from tests.node import HOST_IP, Node, wait_until
from tests.support.secrets import secrets_in

pytestmark = [pytest.mark.node, pytest.mark.idp]

TTL = 10  # seconds, refreshed at half (workloads.annotations): three take about fifteen


@pytest.fixture(scope="module")
def release(node: Node) -> Iterator[Release]:
    with installed(node) as release:
        yield release


@pytest.fixture(scope="module")
def idp_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProviderFactory]:
    factory = OidcProviderFactory(tmp_path_factory.mktemp("e2e-idp"))
    yield factory
    factory.close()


def _start_idp(factory: OidcProviderFactory) -> OidcProvider:
    # Opaque access tokens: the IdP keeps them, so its introspection endpoint can say
    # whether the token the app holds is (still) active.
    return factory.start(
        ttl=TTL,
        host=HOST_IP,
        access_token_format="opaque",
        clients=[*default_oidc_clients(), RESOURCE_SERVER],
    )


@pytest.fixture(scope="module")
def idp(idp_factory: OidcProviderFactory) -> OidcProvider:
    return _start_idp(idp_factory)


def _running(node: Node, namespace: str, release: Release, idp: OidcProvider) -> list[str]:
    oauth_secret(node, namespace, idp.basic)
    node.kubectl("apply", "-f", "-", input=json.dumps(deployment(node, namespace, idp, idp.basic)))
    wait_ready(node, namespace, "billing")
    return [p["metadata"]["name"] for p in pods_of(node, namespace, "app=billing")]


def _refreshes_seen(node: Node, namespace: str, pod: str) -> int:
    """Distinct tokens the app has read, less the first; fails on any rejected call."""
    calls = app_calls(node, namespace, pod)
    bad = bad_calls(calls)
    assert not bad, f"{pod}: the app read a missing, expired or rejected token: {bad[:3]}"
    return len({c["sha"] for c in calls}) - 1


def _wait_refreshes(node: Node, namespace: str, pods: list[str], n: int = 3) -> None:
    for pod in pods:
        wait_until(
            f"{n} refreshes seen by the app in {pod}",
            lambda pod=pod: _refreshes_seen(node, namespace, pod) >= n,  # type: ignore[misc]
            TTL * (n + 4) * 2,
        )


def test_three_replicas_read_tokens_the_idp_accepts_across_three_refreshes(
    node: Node, node_namespace: str, release: Release, idp: OidcProvider
) -> None:
    pods = _running(node, node_namespace, release, idp)

    assert len(pods) == 3
    _wait_refreshes(node, node_namespace, pods)
    pod = json.loads(node.kubectl("-n", node_namespace, "get", "pod", pods[0], "-o", "json").stdout)
    # The sidecar is a native sidecar, Ready, and the only container with the secret.
    [sidecar] = pod["spec"]["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    app_mounts = {m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert not any("client-secret" in m for m in app_mounts)
    env = node.kubectl("-n", node_namespace, "exec", pods[0], "-c", "app", "--", "env").stdout
    assert idp.basic.client_secret not in env
    # The startup probe waits for the first token (`/readyz?wait=`) instead of failing
    # until it is there: no pod says "Startup probe failed ... statuscode: 503". (A probe
    # in the interpreter's first ~50 ms, before the port listens, may still be refused;
    # tests/sidecar/test_sidecar_boot.py shows how early it listens.)
    for name in pods:
        failed = [
            e["message"]
            for e in events_of(node, node_namespace, name, "Unhealthy")
            if "Startup probe" in e["message"] and "refused" not in e["message"]
        ]
        assert not failed, f"{name}: {failed}"


def test_the_deployment_runs_in_a_namespace_that_enforces_restricted(
    node: Node, node_namespace: str, release: Release, idp: OidcProvider
) -> None:
    node.kubectl(
        "label", "namespace", node_namespace, "pod-security.kubernetes.io/enforce=restricted"
    )

    pods = _running(node, node_namespace, release, idp)

    _wait_refreshes(node, node_namespace, pods[:1], n=1)


def test_an_injected_job_completes_and_its_sidecar_does_not_hold_it(
    node: Node, node_namespace: str, release: Release, idp: OidcProvider
) -> None:
    oauth_secret(node, node_namespace, idp.basic)
    node.kubectl("apply", "-f", "-", input=json.dumps(job(node, node_namespace, idp, idp.basic)))

    node.kubectl(
        "-n",
        node_namespace,
        "wait",
        "--for=condition=Complete",
        "job/report-run",
        "--timeout=120s",
        timeout=130,
    )

    [pod] = pods_of(node, node_namespace, "job-name=report-run")
    assert pod["status"]["phase"] == "Succeeded"


def _token_in(node: Node, namespace: str, pod: str) -> str:
    out = node.kubectl(
        "-n", namespace, "exec", pod, "-c", "app", "--", "sh", "-c", 'cat "$TOKEN_FILE"'
    ).stdout
    return str(json.loads(out)["access_token"])


def _logs(node: Node, namespace: str, *args: str) -> str:
    return node.kubectl("-n", namespace, "logs", *args, check=False).stdout


def test_an_idp_outage_reaches_kubectl_describe_through_the_report_service(
    node: Node,
    node_namespace: str,
    release: Release,
    idp_factory: OidcProviderFactory,
) -> None:
    own_idp = _start_idp(idp_factory)  # this test stops it
    pods = _running(node, node_namespace, release, own_idp)
    pod = pods[0]
    token = _token_in(node, node_namespace, pod)

    own_idp.stop()
    [failed] = wait_until(
        f"a TokenRefreshFailed Event on {pod}",
        lambda: events_of(node, node_namespace, pod, "TokenRefreshFailed"),
        TTL * 10,
    )
    [expired] = wait_until(
        f"a TokenExpired Event on {pod} (the file is removed)",
        lambda: events_of(node, node_namespace, pod, "TokenExpired"),
        TTL * 10,
    )
    own_idp.start()
    # The sidecar's backoff is capped at 60 s (full jitter): its next try is within that.
    [recovered] = wait_until(
        f"a TokenRefreshRecovered Event on {pod}",
        lambda: events_of(node, node_namespace, pod, "TokenRefreshRecovered"),
        150,
    )

    assert (failed["type"], expired["type"], recovered["type"]) == ("Warning", "Warning", "Normal")
    assert "connect_error" in failed["message"]
    assert failed["reportingComponent"] == "token-refresher"
    described = node.kubectl("-n", node_namespace, "describe", "pod", pod).stdout
    assert "TokenRefreshFailed" in described
    assert "TokenExpired" in described
    # Neither the token, nor the client secret, reached a log or an Event.
    seen = described + _logs(node, node_namespace, pod, "-c", "token-refresher")
    seen += _logs(
        node, RELEASE_NAMESPACE, "-l", "app.kubernetes.io/component=operator", "--tail=-1"
    )
    assert token
    assert token not in seen
    assert own_idp.basic.client_secret not in seen
    assert not secrets_in(seen)


def test_a_revoked_client_reaches_the_pod_with_the_idps_error(
    node: Node,
    node_namespace: str,
    release: Release,
    idp_factory: OidcProviderFactory,
) -> None:
    own_idp = _start_idp(idp_factory)  # this test changes its registrations
    [pod, *_] = _running(node, node_namespace, release, own_idp)

    client = own_idp.basic
    own_idp.restart(clients=[c for c in own_idp.clients.values() if c is not client])
    # A refresh may fall into the restart itself (connect_error) before the IdP answers
    # invalid_client; the aggregated Event then carries the newest failure.
    [failed] = wait_until(
        f"a TokenRefreshFailed Event on {pod} with the IdP's error",
        lambda: [
            e
            for e in events_of(node, node_namespace, pod, "TokenRefreshFailed")
            if "invalid_client" in e["message"]
        ],
        TTL * 20,
    )

    assert failed["type"] == "Warning"
    assert (client.client_secret or "") not in json.dumps(failed)


def _container_pid(node: Node, pod: dict[str, Any], name: str) -> int:
    statuses = pod["status"].get("initContainerStatuses", []) + pod["status"]["containerStatuses"]
    [cid] = [s["containerID"] for s in statuses if s["name"] == name]
    for line in node.ctr("tasks", "list").splitlines()[1:]:
        task_id, pid, _status = line.split()
        if task_id == cid.removeprefix("containerd://"):
            return int(pid)
    raise AssertionError(f"no running task for container {name} ({cid})")


def _restarts(node: Node, namespace: str, pod: str, container: str) -> int:
    info = json.loads(node.kubectl("-n", namespace, "get", "pod", pod, "-o", "json").stdout)
    statuses = info["status"].get("initContainerStatuses", [])
    return sum(s["restartCount"] for s in statuses if s["name"] == container)


def test_a_killed_sidecar_is_restarted_and_the_app_never_loses_its_token(
    node: Node, node_namespace: str, release: Release, idp: OidcProvider
) -> None:
    [pod_name, *_] = _running(node, node_namespace, release, idp)
    pod = json.loads(
        node.kubectl("-n", node_namespace, "get", "pod", pod_name, "-o", "json").stdout
    )

    os.kill(_container_pid(node, pod, "token-refresher"), signal.SIGKILL)

    wait_until(
        "the sidecar to be restarted",
        lambda: _restarts(node, node_namespace, pod_name, "token-refresher") >= 1,
        60,
    )
    before = _refreshes_seen(node, node_namespace, pod_name)
    wait_until(
        "a refresh by the restarted sidecar",
        lambda: _refreshes_seen(node, node_namespace, pod_name) > before,
        TTL * 6,
    )


def test_tokens_are_kept_across_a_kubelet_restart(
    node: Node, node_namespace: str, release: Release, idp: OidcProvider
) -> None:
    if os.environ.get("TOKEN_REFRESHER_NODE"):
        pytest.skip("the node was started by another process (hack/node.sh): it owns the kubelet")
    pods = _running(node, node_namespace, release, idp)

    node.restart_kubelet()

    before = {p: _refreshes_seen(node, node_namespace, p) for p in pods}
    for pod in pods:
        wait_until(
            f"refreshes in {pod} after the kubelet restart",
            lambda pod=pod: _refreshes_seen(node, node_namespace, pod) > before[pod],  # type: ignore[misc]
            TTL * 6,
        )
    assert {p["metadata"]["name"] for p in pods_of(node, node_namespace, "app=billing")} == set(
        pods
    )


def _annotated_pod(node: Node, namespace: str, idp: OidcProvider, name: str) -> dict[str, Any]:
    template = deployment(node, namespace, idp, idp.basic)["spec"]["template"]
    metadata = {"name": name, "namespace": namespace, **template["metadata"]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def test_admission_keeps_working_when_an_operator_pod_is_deleted(
    node: Node, node_namespace: str, release: Release, idp: OidcProvider
) -> None:
    oauth_secret(node, node_namespace, idp.basic)
    [victim, *_] = release.operator_pods()

    node.kubectl(
        "-n", release.namespace, "delete", "pod", victim["metadata"]["name"], "--wait=false"
    )
    pod = _annotated_pod(node, node_namespace, idp, "after-delete")
    node.kubectl("apply", "-f", "-", input=json.dumps(pod))

    created = json.loads(
        node.kubectl("-n", node_namespace, "get", "pod", "after-delete", "-o", "json").stdout
    )
    assert [c["name"] for c in created["spec"]["initContainers"]] == ["token-refresher"]


def test_with_no_operator_running_annotated_pods_are_refused_and_others_admitted(
    node: Node, node_namespace: str, release: Release, idp: OidcProvider
) -> None:
    oauth_secret(node, node_namespace, idp.basic)
    release.scale(0)
    try:
        refused = node.kubectl(
            "apply",
            "-f",
            "-",
            check=False,
            input=json.dumps(_annotated_pod(node, node_namespace, idp, "refused")),
        )
        plain = _annotated_pod(node, node_namespace, idp, "plain")
        plain["metadata"]["annotations"] = {}
        admitted = node.kubectl("apply", "-f", "-", input=json.dumps(plain), check=False)
    finally:
        release.scale(2)

    assert refused.returncode != 0
    assert "token-refresher" in refused.stderr
    assert admitted.returncode == 0, admitted.stderr


def test_a_rollout_restart_brings_new_pods_with_fresh_tokens(
    node: Node, node_namespace: str, release: Release, idp: OidcProvider
) -> None:
    old = set(_running(node, node_namespace, release, idp))

    node.kubectl("-n", node_namespace, "rollout", "restart", "deployment/billing")
    wait_until(
        "the rollout to replace every pod",
        lambda: (
            not old & {p["metadata"]["name"] for p in pods_of(node, node_namespace, "app=billing")}
        ),
        180,
    )
    wait_ready(node, node_namespace, "billing")

    new = [p["metadata"]["name"] for p in pods_of(node, node_namespace, "app=billing")]
    _wait_refreshes(node, node_namespace, new, n=1)
