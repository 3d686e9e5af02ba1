"""Operator faults against the real kube-apiserver: the apiserver restarting under a
running operator, the operator restarting, 200 pods admitted at once, garbage posted
straight to the webhook port, and annotations far larger than any real one.

The operator is the real console script in DEV mode (tests/operator/conftest.py's
`start_operator`), one per module here: these tests stop and restart things, so they
do not share the session operator of tests/operator.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.controlplane import ControlPlane
from tests.support.operator import (
    OPERATOR_NAMESPACE,
    OperatorProcess,
    start_operator,
    stop_operator,
)
from tests.support.wait import WaitTimeout, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

P = "token-refresher.io/"
ANNOTATIONS = {
    P + "inject": "true",
    P + "token-url": "https://idp.example/oauth2/token",
    P + "client-id": "billing",
    P + "client-secret": "billing-oauth/secret",
}


class Operator:
    """The module's operator process, which a test may restart."""

    def __init__(self, cluster: ControlPlane, workdir_factory: pytest.TempPathFactory) -> None:
        self.cluster = cluster
        self._workdirs = workdir_factory
        self.process: OperatorProcess = self._start()

    def _start(self) -> OperatorProcess:
        return start_operator(self.cluster, self._workdirs.mktemp("fault-operator"))

    def restart(self) -> None:
        stop_operator(self.process)
        assert self.process.proc.returncode == 0, self.process.log()[-3000:]
        self.process = self._start()

    def stop(self) -> None:
        stop_operator(self.process)


@pytest.fixture(scope="module")
def operator(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    op = Operator(cluster, tmp_path_factory)
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def namespace(cluster: ControlPlane) -> str:
    name = f"f-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("-n", name, "create", "serviceaccount", "default")
    return name


def pod(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": dict(annotations or ANNOTATIONS)},
        "spec": {"containers": [{"name": "app", "image": "registry.test/app:1"}]},
    }


def create(cluster: ControlPlane, namespace: str, body: dict[str, Any], *, check: bool = True):
    return cluster.kubectl(
        "-n", namespace, "create", "-f", "-", input=json.dumps(body), check=check
    )


def injected(cluster: ControlPlane, namespace: str, name: str) -> bool:
    stored = json.loads(cluster.kubectl("-n", namespace, "get", "pod", name, "-o", "json").stdout)
    return _has_sidecar(stored)


def _has_sidecar(stored: dict[str, Any]) -> bool:
    names = [c["name"] for c in stored["spec"].get("initContainers") or []]
    annotations = stored["metadata"].get("annotations") or {}
    return names[:1] == ["token-refresher"] and annotations.get(P + "injected") == "true"


def wait_injecting(cluster: ControlPlane, namespace: str, prefix: str, *, timeout: float = 30):
    """Create pods until one is injected (the first ones may meet a reconnecting
    apiserver); return how many tries it took."""
    attempts = itertools.count(1)
    refusals: list[str] = []

    def one_more() -> int | None:
        attempt = next(attempts)
        name = f"{prefix}-{attempt}"
        proc = create(cluster, namespace, pod(name), check=False)
        if proc.returncode != 0:
            refusals.append(proc.stderr.strip())
            return None
        assert injected(cluster, namespace, name), f"{name} was admitted without the sidecar"
        return attempt

    try:
        return wait_until("a pod created and injected", one_more, timeout)
    except WaitTimeout:
        raise AssertionError(f"no pod injected within {timeout} s: {refusals[-1:]}") from None


def test_injection_survives_a_kube_apiserver_restart(
    cluster: ControlPlane, operator: Operator, namespace: str
) -> None:
    create(cluster, namespace, pod("before"))
    assert injected(cluster, namespace, "before")
    began = time.monotonic()
    cluster.restart_apiserver(down=1.0)
    restarted_in = time.monotonic() - began
    tries = wait_injecting(cluster, namespace, "after")
    assert tries <= 5, f"injection took {tries} tries after the apiserver came back"
    assert operator.process.proc.poll() is None, "the operator died with the apiserver"
    assert operator.process.health()  # the liveness probe answers
    print(f"\napiserver restarted in {restarted_in:.1f} s; injecting again after {tries} try")


def test_injection_works_again_after_an_operator_restart_and_nothing_slips_by_silently(
    cluster: ControlPlane, operator: Operator, namespace: str
) -> None:
    create(cluster, namespace, pod("before"))
    stop_operator(operator.process)
    # Down: in DEV mode the operator removed its webhook configuration on the way out,
    # so a pod created now is admitted without the sidecar (in a cluster, the chart's
    # configuration fails closed instead). Either way it must not go unnoticed.
    during = create(cluster, namespace, pod("during"), check=False)
    operator.process = operator._start()
    assert injected(cluster, namespace, "before")
    tries = wait_injecting(cluster, namespace, "after", timeout=15)
    assert tries == 1
    if during.returncode == 0:
        assert not injected(cluster, namespace, "during")
        operator.process.wait_for(
            "SidecarNotInjected on the pod admitted while the operator was down",
            lambda: _events(cluster, namespace, "during", "SidecarNotInjected"),
        )
    else:
        assert "token-refresher" in during.stderr


def _events(cluster: ControlPlane, namespace: str, name: str, reason: str) -> list[dict]:
    items = json.loads(
        cluster.kubectl(
            "-n",
            namespace,
            "get",
            "events",
            "--field-selector",
            f"involvedObject.name={name}",
            "-o",
            "json",
        ).stdout
    )["items"]
    return [e for e in items if e.get("reason") == reason]


def test_200_pods_admitted_concurrently_are_all_injected(
    cluster: ControlPlane, operator: Operator, namespace: str
) -> None:
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    context.load_cert_chain(cluster.workdir / "admin.crt", cluster.workdir / "admin.key")
    url = f"{cluster.server}/api/v1/namespaces/{namespace}/pods"

    async def create_all() -> list[httpx2.Response]:
        limits = httpx2.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx2.AsyncClient(verify=context, limits=limits, timeout=60) as client:
            return await asyncio.gather(
                *(client.post(url, json=pod(f"p-{i:03d}")) for i in range(200))
            )

    began = time.monotonic()
    responses = asyncio.run(create_all())
    took = time.monotonic() - began
    failed = [(r.status_code, r.text[:300]) for r in responses if r.status_code != 201]
    assert failed == [], failed[:3]
    stored = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)
    assert len(stored["items"]) == 200
    assert [p["metadata"]["name"] for p in stored["items"] if not _has_sidecar(p)] == []
    assert all(
        p["spec"]["initContainers"][0]["env"][0]["value"] == "https://idp.example/oauth2/token"
        for p in stored["items"]
    )
    logged = operator.process.log()
    assert (
        sum(f"pod {namespace}/p-" in line and "injecting" in line for line in logged.splitlines())
        == 200
    )
    assert operator.process.proc.poll() is None
    print(f"\n200 concurrent creations admitted in {took:.1f} s")


GOOD_REVIEW = {
    "apiVersion": "admission.k8s.io/v1",
    "kind": "AdmissionReview",
    "request": {
        "uid": "0e6c7a58-0000-4000-8000-000000000001",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "namespace": "default",
        "name": "x",
        "object": {**pod("x"), "metadata": {"name": "x", "annotations": ANNOTATIONS}},
        "userInfo": {"username": "admin"},
    },
}

MALFORMED = {
    "garbage-json": b"{not json",
    "empty-body": b"",
    "json-array": b"[]",
    "json-string": b'"AdmissionReview"',
    "wrong-kind": json.dumps({**GOOD_REVIEW, "kind": "Pod"}).encode(),
    "wrong-api-version": json.dumps({**GOOD_REVIEW, "apiVersion": "v1"}).encode(),
    "missing-request": json.dumps(
        {k: v for k, v in GOOD_REVIEW.items() if k != "request"}
    ).encode(),
    "request-not-an-object": json.dumps({**GOOD_REVIEW, "request": "CREATE"}).encode(),
    "object-not-an-object": json.dumps(
        {**GOOD_REVIEW, "request": {**GOOD_REVIEW["request"], "object": ["x"]}}
    ).encode(),
    "metadata-not-an-object": json.dumps(
        {**GOOD_REVIEW, "request": {**GOOD_REVIEW["request"], "object": {"metadata": 7}}}
    ).encode(),
    "missing-object": json.dumps(
        {
            **GOOD_REVIEW,
            "request": {k: v for k, v in GOOD_REVIEW["request"].items() if k != "object"},
        }
    ).encode(),
    "2-mb-body": json.dumps({**GOOD_REVIEW, "padding": "a" * 2_000_000}).encode(),
}


def test_malformed_admission_reviews_get_a_clear_4xx_and_nothing_breaks(operator: Operator) -> None:
    url = f"https://127.0.0.1:{operator.process.webhook_port}/mutate"
    answers = {}
    with httpx2.Client(verify=False, timeout=10, trust_env=False) as client:
        for name, body in MALFORMED.items():
            r = client.post(url, content=body, headers={"Content-Type": "application/json"})
            answers[name] = (r.status_code, r.text.strip())
        good = client.post(url, json=GOOD_REVIEW)
    wrong = {name: answer for name, answer in answers.items() if not 400 <= answer[0] < 500}
    assert wrong == {}
    for name, (_status, text) in answers.items():
        assert text, name
        assert "Internal Server Error" not in text, (name, text)
    assert answers["wrong-kind"][1].endswith("kind must be AdmissionReview (got 'Pod')")
    assert "request" in answers["missing-request"][1]
    assert answers["2-mb-body"][0] == 413
    # ...and the next real review is answered as ever.
    assert good.status_code == 200
    assert good.json()["response"]["uid"] == GOOD_REVIEW["request"]["uid"]
    assert operator.process.proc.poll() is None
    assert "Traceback" not in operator.process.log()


@pytest.mark.parametrize(
    ("annotations", "says"),
    [
        (
            {**ANNOTATIONS, P + "scope": "s" * 100_000},
            f"{P}scope: must be at most 2048 characters (got 100000)",
        ),
        (
            {**ANNOTATIONS, P + "x" * 100_000: "1"},
            f"{P}{'x' * 40}",  # named, but not echoed 100 KB long
        ),
    ],
    ids=["100-kb-value", "100-kb-unknown-key"],
)
def test_oversized_annotations_are_denied_with_a_clear_message(
    cluster: ControlPlane, operator: Operator, namespace: str, annotations, says: str
) -> None:
    proc = create(cluster, namespace, pod("big", annotations), check=False)
    assert proc.returncode != 0
    message = proc.stderr
    assert 'admission webhook "' in message, message[:500]
    assert "denied the request" in message, message[:500]
    assert says in message, message[:1000]
    assert len(message) < 4000, f"a {len(message)}-character denial"
    missing = cluster.kubectl("-n", namespace, "get", "pod", "big", check=False)
    assert "NotFound" in missing.stderr
    assert operator.process.proc.poll() is None
