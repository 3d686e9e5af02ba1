"""Section 3, the webhook: pods per second through the real kube-apiserver with and
without injection (the operator in DEV mode), interleaved, and /mutate called directly."""

from __future__ import annotations

import base64
import json
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2
from tests.controlplane import ControlPlane

from .apimetrics import interleaved_admission, one_at_a_time
from .cluster import Cluster, PodCreator, Pods, make_namespace, pod_manifest
from .common import Plan, Progress, percentile
from .stubs import webhook_floor


def bench_webhook(plan: Plan, cluster: Cluster, work: Path, say: Progress) -> dict[str, Any]:
    section = "webhook"
    cluster.start_operator()
    cp = cluster.start()
    assert cluster.operator is not None
    for namespace, _ in Pods.KINDS.values():
        make_namespace(cp, namespace)
    creator = PodCreator(cp, plan.pod_threads)
    pods = Pods()
    try:
        say.say(section, "warming up: 20 pods of each kind")
        for kind in Pods.KINDS:
            creator.batch(pods.make(kind, 20))
        say.say(
            section,
            f"{plan.pods} pods with injection and {plan.pods} without, interleaved in "
            f"{plan.pod_rounds} rounds, {plan.pod_threads} client threads",
        )
        created, admission = interleaved_admission(
            plan,
            cluster,
            creator,
            pods,
            ("operator", cluster.operator.proc.pid),
            note=lambda text: say.say(section, text),
        )
        count = max(5, plan.mutate_calls // 2)
        say.say(section, f"{count} annotated pods one at a time (the apiserver's histogram)")
        alone = one_at_a_time(cp, creator, pods, count)
        mutate = _mutate_directly(plan, cp, say)
        floor = webhook_floor(plan, cluster, creator, pods, work, say) if plan.profile else None
    finally:
        creator.close()
    count = len(created.latencies["injected"])
    result: dict[str, Any] = {
        "pods_per_kind": count,
        "client_threads": plan.pod_threads,
        "rounds": plan.pod_rounds,
        "plain_pods_per_s": round(created.rate("plain"), 1),
        "injected_pods_per_s": round(created.rate("injected"), 1),
        "ratio": round(created.ratio, 3),
        "create_latency_ms": {
            kind: {
                "p50": round(created.latency_ms(kind, 50), 1),
                "p99": round(created.latency_ms(kind, 99), 1),
            }
            for kind in Pods.KINDS
        },
        "admission_overhead_ms": {
            "p50": round(created.latency_ms("injected", 50) - created.latency_ms("plain", 50), 1),
            "p99": round(created.latency_ms("injected", 99) - created.latency_ms("plain", 99), 1),
        },
        "injected": created.injected,
        "cpu_ms_per_pod": created.cpu_ms_per_pod(),
        # What the apiserver measured for each call to our webhook (interleaved batches).
        "apiserver_admission": admission,
        # The same, for annotated pods created one at a time: the path, without the queues
        # of a saturated apiserver on two shared CPUs.
        "apiserver_admission_one_at_a_time": alone,
        "mutate_direct_ms": mutate,
    }
    if floor is not None:
        result["floor"] = floor
        stand_in = floor["operator-patch"]["ratio"]
        result["ratio_to_stand_in"] = round(created.ratio / stand_in, 3) if stand_in else None
    return result


def _mutate_directly(plan: Plan, cp: ControlPlane, say: Progress) -> dict[str, Any]:
    """POST AdmissionReviews to the operator's /mutate over one kept-alive connection:
    the webhook's own latency, without the apiserver around it."""
    say.say("webhook", f"{plan.mutate_calls} AdmissionReviews straight to /mutate")
    mwc = json.loads(
        cp.kubectl(
            "get", "mutatingwebhookconfiguration", "token-refresher-dev", "-o", "json"
        ).stdout
    )
    client_config = mwc["webhooks"][0]["clientConfig"]
    ca = base64.b64decode(client_config["caBundle"]).decode()
    context = ssl.create_default_context(cadata=ca)
    times: list[float] = []
    with httpx2.Client(verify=context, trust_env=False, timeout=10) as http:
        for n in range(plan.mutate_calls):
            pod = pod_manifest(f"direct-{n}", "bench-inject", inject=True)
            review = {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": str(uuid.uuid4()),
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                    "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                    "name": pod["metadata"]["name"],
                    "namespace": "bench-inject",
                    "operation": "CREATE",
                    "userInfo": {"username": "bench"},
                    "object": pod,
                    "oldObject": None,
                    "dryRun": True,
                    "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
                },
            }
            started = time.perf_counter()
            got = http.post(client_config["url"], json=review)
            times.append(time.perf_counter() - started)
            response = got.json()["response"]
            if not response.get("allowed") or not response.get("patch"):
                raise RuntimeError(f"/mutate did not inject: {response}")
    return {
        "calls": len(times),
        "p50": round(percentile(times, 50) * 1000, 2),
        "p99": round(percentile(times, 99) * 1000, 2),
    }
