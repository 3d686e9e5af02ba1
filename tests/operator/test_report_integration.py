"""The report endpoint against the real kube-apiserver: TokenReview, pods, Events.

`serve_reports` runs in-process (in a thread with its own event loop) on a free port with
a self-signed certificate, talking to the test control plane as a service account that
holds exactly the RBAC the README asks for: create tokenreviews, create/patch events, get
(list, watch) pods. Pods stay Pending (no scheduler, no kubelet): a TokenRequest bound to
a pod works all the same, and that is all a report needs.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.controlplane import ControlPlane, free_port
from tests.rbac import report_endpoint_rbac
from tests.support.wait import wait_until
from token_refresher_operator.config import OperatorSettings
from token_refresher_operator.devcert import write_self_signed
from token_refresher_operator.report import ReportMetrics
from token_refresher_operator.reportserver import ReportServer

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

AUD = "token-refresher-report"
POD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  annotations: {annotations}
spec:
  serviceAccountName: app
  containers: [{{name: app, image: registry.invalid/app:1}}]
"""


def write_cert(directory: Path) -> tuple[Path, Path]:
    cert = write_self_signed(directory, hosts=("127.0.0.1",))
    return cert.cert_file, cert.key_file


@dataclass
class Endpoint:
    """The running endpoint, the namespace of the test pods, and helpers."""

    cluster: ControlPlane
    ns: str
    port: int
    ca: Path
    metrics: ReportMetrics
    uids: dict[str, str]
    last_accepted: int = 0  # reports the last `post` got accepted (0 or 1)

    def token(self, pod: str, *, audience: str = AUD) -> str:
        return self.cluster.kubectl(
            "-n", self.ns, "create", "token", "app", "--audience", audience,
            "--bound-object-kind", "Pod", "--bound-object-name", pod,
            "--bound-object-uid", self.uids[pod],
        ).stdout.strip()  # fmt: skip

    def report(self, pod: str, **changes: Any) -> dict[str, Any]:
        return {
            "namespace": self.ns,
            "pod": pod,
            "uid": self.uids[pod],
            "state": "failing",
            "error": "invalid_client",
            "description": "Client authentication failed",
            "consecutive_failures": 3,
            "since": "2026-11-22T01:00:00Z",
            **changes,
        }

    def post(
        self, body: bytes | dict[str, Any], *, token: str | None
    ) -> tuple[int, dict[str, Any]]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPSConnection(
            "127.0.0.1",
            self.port,
            context=ssl.create_default_context(cafile=str(self.ca)),
            timeout=30,
        )
        before = sum(self.metrics.accepted.values())
        try:
            conn.request("POST", "/report", body=raw, headers=headers)
            resp = conn.getresponse()
            result = resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()
        # The endpoint counts a report before it answers, so this is the post's own count.
        self.last_accepted = sum(self.metrics.accepted.values()) - before
        return result

    def events(self, pod: str) -> list[dict[str, Any]]:
        """events.k8s.io/v1 Events regarding `pod`."""
        out = self.cluster.kubectl(
            "-n", self.ns, "get", "events.v1.events.k8s.io", "-o", "json"
        ).stdout  # fmt: skip
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return [e for e in items if e["regarding"]["name"] == pod]

    def core_events(self, pod: str) -> list[dict[str, Any]]:
        """The same Events through core/v1, as `kubectl get events` shows them."""
        out = self.cluster.kubectl(
            "-n", self.ns, "get", "events", "--field-selector",
            f"involvedObject.name={pod}", "-o", "json",
        ).stdout  # fmt: skip
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 15.0) -> Any:
        return wait_until(what, check, timeout, every=0.2)

    def assert_no_event(self, pod: str) -> None:
        # Only an accepted report reaches the recorder, which writes in the background:
        # with the last one refused, no Event is on its way, and none may be there.
        assert self.last_accepted == 0
        assert self.events(pod) == []


def operator_api_client(cluster: ControlPlane, ns: str) -> Any:
    """A kubernetes ApiClient authenticated as the operator's service account."""
    from kubernetes import client

    cluster.kubectl("apply", "-f", "-", input=report_endpoint_rbac(ns))
    token = cluster.kubectl("-n", ns, "create", "token", "operator").stdout.strip()
    configuration = client.Configuration()
    configuration.host = cluster.server
    configuration.ssl_ca_cert = str(cluster.ca_file)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


@pytest.fixture(scope="module")
def endpoint(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    ns = f"report-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("-n", ns, "create", "serviceaccount", "app")
    injected = '{"token-refresher.io/injected": "true"}'
    pods = {"a": injected, "b": injected, "c": "{}", "d": injected, "e": injected}
    for name, marker in pods.items():
        cluster.kubectl("apply", "-f", "-", input=POD.format(name=name, ns=ns, annotations=marker))
    uids = {
        name: cluster.kubectl("-n", ns, "get", "pod", name, "-o", "jsonpath={.metadata.uid}").stdout
        for name in pods
    }
    cert, key = write_cert(tmp_path_factory.mktemp("report-tls"))
    settings = OperatorSettings(
        listen_host="127.0.0.1", report_port=free_port(), tls_cert_file=cert, tls_key_file=key
    )
    api_client = operator_api_client(cluster, ns)
    metrics = ReportMetrics()
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop: list[asyncio.Event] = []
    failure: list[BaseException] = []

    async def main() -> None:
        stop.append(asyncio.Event())
        async with ReportServer(
            host=settings.listen_host,
            port=settings.report_port,
            cert_file=cert,
            key_file=key,
            audience=settings.report_audience,
            api_client=api_client,
            metrics=metrics,
            coalesce=1.0,  # production: 10 s; the tests should not wait that long
        ):
            started.set()
            await stop[0].wait()

    def thread_main() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:
            failure.append(exc)
            started.set()
        finally:
            loop.close()

    thread = threading.Thread(target=thread_main, name="report endpoint", daemon=True)
    thread.start()
    assert started.wait(30), "the report endpoint did not start"
    assert not failure, failure
    try:
        yield Endpoint(cluster, ns, settings.report_port, cert, metrics, uids)
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(30)
        api_client.close()
        assert not failure, failure


def test_a_failing_report_from_its_pod_becomes_a_warning_event(endpoint: Endpoint) -> None:
    status, body = endpoint.post(endpoint.report("a"), token=endpoint.token("a"))
    assert (status, body) == (202, {"status": "accepted"})
    (event,) = endpoint.wait_for(
        "TokenRefreshFailed on pod a",
        lambda: [e for e in endpoint.events("a") if e["reason"] == "TokenRefreshFailed"],
    )
    assert event["type"] == "Warning"
    assert "invalid_client: Client authentication failed" in event["note"]
    assert "3 consecutive failures since 2026-11-22T01:00:00Z" in event["note"]
    assert event["regarding"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "a",
        "namespace": endpoint.ns,
        "uid": endpoint.uids["a"],
    }
    assert event["reportingController"] == "token-refresher"
    assert event["action"] == "Refresh"
    # `kubectl get events --field-selector involvedObject.name=a` shows the same Event.
    (core,) = [e for e in endpoint.core_events("a") if e["reason"] == "TokenRefreshFailed"]
    assert "invalid_client" in core["message"]
    # DESIGN: the reporting component is `token-refresher` (kubectl describe's "From").
    assert core["reportingComponent"] == "token-refresher"
    assert core["involvedObject"]["uid"] == endpoint.uids["a"]


def test_an_expired_report_becomes_token_expired(endpoint: Endpoint) -> None:
    report = endpoint.report("a", state="expired", error="invalid_grant", description="")
    assert endpoint.post(report, token=endpoint.token("a"))[0] == 202
    (event,) = endpoint.wait_for(
        "TokenExpired on pod a",
        lambda: [e for e in endpoint.events("a") if e["reason"] == "TokenExpired"],
    )
    assert event["type"] == "Warning"
    assert "last error: invalid_grant" in event["note"]


def test_a_recovered_report_becomes_a_normal_event(endpoint: Endpoint) -> None:
    report = endpoint.report("a", state="recovered", consecutive_failures=4)
    assert endpoint.post(report, token=endpoint.token("a"))[0] == 202
    (event,) = endpoint.wait_for(
        "TokenRefreshRecovered on pod a",
        lambda: [e for e in endpoint.events("a") if e["reason"] == "TokenRefreshRecovered"],
    )
    assert event["type"] == "Normal"
    assert event["note"].startswith("Token refresh recovered after 4 consecutive failures")


def test_no_token_is_401(endpoint: Endpoint) -> None:
    before = sum(endpoint.metrics.accepted.values())
    status, body = endpoint.post(endpoint.report("b"), token=None)
    assert (status, body["error"]) == (401, "no_token")
    assert sum(endpoint.metrics.accepted.values()) == before
    endpoint.assert_no_event("b")


def test_a_token_for_another_audience_is_401(endpoint: Endpoint) -> None:
    token = endpoint.token("b", audience="https://kubernetes.default.svc")
    status, body = endpoint.post(endpoint.report("b"), token=token)
    assert (status, body["error"]) == (401, "invalid_token")
    endpoint.assert_no_event("b")


def test_a_token_whose_pod_was_deleted_is_401(endpoint: Endpoint) -> None:
    """An invalid, expired-like token.

    TokenRequest will not mint a token shorter than 10 minutes, so a test cannot wait
    for one to expire. A token bound to a pod dies with the pod instead: the apiserver
    checks the bound object on every review, and answers "service account token has been
    invalidated" once pod d is gone (pods without a node are deleted at once).
    """
    token = endpoint.token("d")
    endpoint.cluster.kubectl("-n", endpoint.ns, "delete", "pod", "d", "--wait=true")
    status, body = endpoint.post(endpoint.report("d"), token=token)
    assert (status, body["error"]) == (401, "invalid_token")
    endpoint.assert_no_event("d")


def test_a_token_signed_by_another_key_is_401(endpoint: Endpoint) -> None:
    """The real claims of a token for pod b, re-signed with a key the apiserver never saw."""
    real = endpoint.token("b")
    header_b64, claims_b64, _ = real.split(".")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing_input = f"{header_b64}.{claims_b64}".encode()
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    forged = f"{header_b64}.{claims_b64}." + base64.urlsafe_b64encode(signature).rstrip(
        b"="
    ).decode("ascii")
    status, body = endpoint.post(endpoint.report("b"), token=forged)
    assert (status, body["error"]) == (401, "invalid_token")
    endpoint.assert_no_event("b")


def test_a_pods_token_cannot_report_about_another_pod(endpoint: Endpoint) -> None:
    status, body = endpoint.post(endpoint.report("b"), token=endpoint.token("a"))
    assert (status, body["error"]) == (403, "wrong_pod")
    endpoint.assert_no_event("b")


def test_a_pod_without_the_injected_marker_is_403(endpoint: Endpoint) -> None:
    status, body = endpoint.post(endpoint.report("c"), token=endpoint.token("c"))
    assert (status, body["error"]) == (403, "not_injected")
    endpoint.assert_no_event("c")


def test_a_garbage_body_is_400(endpoint: Endpoint) -> None:
    status, body = endpoint.post(b"{not json", token=endpoint.token("b"))
    assert (status, body["error"]) == (400, "bad_body")
    endpoint.assert_no_event("b")


def test_an_oversized_body_is_413(endpoint: Endpoint) -> None:
    report = endpoint.report("b", padding="x" * 17_000)
    status, body = endpoint.post(report, token=endpoint.token("b"))
    assert (status, body["error"]) == (413, "too_large")
    endpoint.assert_no_event("b")


def test_a_hundred_failures_are_one_event_with_a_count(endpoint: Endpoint) -> None:
    token = endpoint.token("e")
    codes = [
        endpoint.post(endpoint.report("e", consecutive_failures=i), token=token)[0]
        for i in range(1, 101)
    ]
    accepted = codes.count(202)
    # The per-pod limit (5/s, bursts of 20) turns part of a flood away; what it lets
    # through is counted, not posted one by one.
    assert set(codes) <= {202, 429}, codes
    assert accepted >= 20, codes

    def counted() -> list[dict[str, Any]] | None:
        events = [e for e in endpoint.events("e") if e["reason"] == "TokenRefreshFailed"]
        done = len(events) == 1 and (events[0].get("series") or {}).get("count") == accepted
        return events if done else None

    (event,) = endpoint.wait_for(f"one event with series.count {accepted}", counted)
    assert event["series"]["count"] >= 2
    # The note is the newest accepted report's: the default `kubectl get events` shows it.
    newest = max(i for i, code in enumerate(codes, start=1) if code == 202)
    assert f"({newest} consecutive failures since" in event["note"]
    (core,) = [e for e in endpoint.core_events("e") if e["reason"] == "TokenRefreshFailed"]
    assert core["series"]["count"] == accepted
    assert core["count"] == accepted
