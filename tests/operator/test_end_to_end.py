"""The whole product on the real control plane: injection, the sidecar, a real IdP, Events.

A pod is annotated and created through the real kube-apiserver; the operator (DEV mode)
injects the sidecar; the sidecar is then run as a local process with exactly the env the
webhook rendered (tests/podrunner.py: only volume paths and the listen address are
remapped) against a real oidc-provider. Breaking the IdP must then show up where an
engineer on call looks: `kubectl get events --field-selector involvedObject.name=<pod>`.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import secrets_in
from tests.controlplane import ControlPlane, stop_process
from tests.idp import OidcProvider, OidcProviderFactory
from tests.operator.conftest import OperatorProcess
from tests.operator.test_injection import get_pod
from tests.podrunner import SidecarRun, prepare_sidecar
from token_refresher.expiry import jwt_claims

pytestmark = [pytest.mark.cluster, pytest.mark.idp]

P = "token-refresher.io/"


def _create_pod(
    cluster: ControlPlane, namespace: str, idp: OidcProvider, name: str
) -> dict[str, Any]:
    client = idp.basic
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "oauth", "namespace": namespace},
        "data": {"secret": base64.b64encode((client.client_secret or "").encode()).decode()},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {
                P + "inject": "true",
                P + "issuer": idp.issuer,
                P + "client-id": client.client_id,
                P + "client-secret": "oauth/secret",
                P + "resource": idp.resource,
                P + "scope": "api:read",
            },
        },
        "spec": {"containers": [{"name": "app", "image": "registry.test/app:1"}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    return get_pod(cluster, namespace, name)


def _events(cluster: ControlPlane, namespace: str, pod: str, reason: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "-n", namespace, "get", "events", "-o", "json",
        f"--field-selector=involvedObject.name={pod},reason={reason}",
    ).stdout  # fmt: skip
    return list(json.loads(out)["items"])


def _wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.3)


def _app_token_file(pod: dict[str, Any], run: SidecarRun) -> Path:
    [app] = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in app["env"]}
    return run.local(env["TOKEN_FILE"])


@pytest.fixture
def idp(oidc_provider: OidcProviderFactory) -> OidcProvider:
    return oidc_provider.start(ttl=5)


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[Any]]]:
    procs: list[subprocess.Popen[Any]] = []
    yield procs
    for proc in procs:
        stop_process(proc)


def test_the_injected_sidecar_fetches_a_token_from_a_real_idp(
    cluster: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    idp: OidcProvider,
    tmp_path: Path,
) -> None:
    pod = _create_pod(cluster, namespace, idp, "fetches")
    run = prepare_sidecar(cluster, pod, tmp_path)

    once = run.run("--once")

    assert once.returncode == 0, once.stderr
    token = _app_token_file(pod, run).read_text()
    claims = jwt_claims(token)
    assert claims is not None
    assert claims["aud"] == idp.resource
    assert claims["client_id"] == idp.basic.client_id
    assert token not in once.stderr + once.stdout


def test_an_idp_outage_reaches_the_pod_as_events(
    cluster: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    idp: OidcProvider,
    tmp_path: Path,
    running: list[subprocess.Popen[Any]],
) -> None:
    pod = _create_pod(cluster, namespace, idp, "outage")
    # Faster retries than the defaults, so the test does not wait out a 60 s backoff;
    # everything else is the rendered spec.
    run = prepare_sidecar(cluster, pod, tmp_path, extra_env={"TOKEN_REFRESHER_BACKOFF_MAX": "2"})
    token_file = _app_token_file(pod, run)
    with (tmp_path / "sidecar.log").open("wb") as log:
        running.append(run.start(stdout=subprocess.DEVNULL, stderr=log))
    _wait("the first token", token_file.exists, 30)

    idp.stop()
    [failed] = _wait(
        "TokenRefreshFailed",
        lambda: _events(cluster, namespace, "outage", "TokenRefreshFailed"),
        30,
    )
    assert failed["type"] == "Warning"
    assert "connect_error" in failed["message"]
    assert failed["involvedObject"]["uid"] == pod["metadata"]["uid"]

    [expired] = _wait(
        "TokenExpired", lambda: _events(cluster, namespace, "outage", "TokenExpired"), 30
    )
    assert expired["type"] == "Warning"
    assert not token_file.exists()

    idp.start()
    [recovered] = _wait(
        "TokenRefreshRecovered",
        lambda: _events(cluster, namespace, "outage", "TokenRefreshRecovered"),
        30,
    )
    assert recovered["type"] == "Normal"
    assert token_file.exists()
    # The whole run logged no credential: neither the sidecar nor the operator.
    assert not secrets_in((tmp_path / "sidecar.log").read_text())
    assert not secrets_in(operator.log())


def test_a_revoked_client_reaches_the_pod_with_the_idps_error(
    cluster: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    idp: OidcProvider,
    tmp_path: Path,
    running: list[subprocess.Popen[Any]],
) -> None:
    pod = _create_pod(cluster, namespace, idp, "revoked")
    run = prepare_sidecar(cluster, pod, tmp_path)
    token_file = _app_token_file(pod, run)
    with (tmp_path / "sidecar.log").open("wb") as log:
        running.append(run.start(stdout=subprocess.DEVNULL, stderr=log))
    _wait("the first token", token_file.exists, 30)

    # The client's registration is gone: the IdP answers invalid_client from now on.
    client = idp.basic
    idp.restart(clients=[c for c in idp.clients.values() if c.client_id != client.client_id])
    [failed] = _wait(
        "TokenRefreshFailed",
        lambda: _events(cluster, namespace, "revoked", "TokenRefreshFailed"),
        30,
    )
    assert "invalid_client" in failed["message"]
    assert (client.client_secret or "") not in json.dumps(failed)
