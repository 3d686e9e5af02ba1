"""Stand-in webhooks that tell the apiserver's share of the admission cost from the
operator's (run with the full plan, after the operator's own measurement)."""

from __future__ import annotations

import functools
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.controlplane import free_port

from .apimetrics import AdmissionLatency, one_at_a_time
from .cluster import Cluster, PodCreator, Pods, interleaved
from .common import Plan, Progress, wait_for

# Stand-ins for the operator's webhook, to tell the apiserver's share of the admission
# cost from the operator's: `allow` answers every review allowed and unchanged, `label`
# adds one label, `operator-patch` returns the operator's own patch (`build_patch`, the
# pure core of /mutate) from a bare aiohttp handler, without kopf around it.
_WEBHOOK_STUB = r"""
import base64, json, ssl, sys
from pathlib import Path
from aiohttp import web
port, cert, key, mode, config_file = sys.argv[1:6]
if mode == "operator-patch":
    from token_refresher_operator.config import load_cluster_config
    from token_refresher_operator.patch import build_patch
    config = load_cluster_config(Path(config_file))
LABEL = [{"op": "add", "path": "/metadata/labels", "value": {"bench": "patched"}}]
async def mutate(request):
    req = (await request.json())["request"]
    pod = req["object"]
    response = {"uid": req["uid"], "allowed": True}
    ops = None
    if mode == "label" and "labels" not in pod["metadata"]:
        ops = LABEL
    elif mode == "operator-patch" and not any(
        c.get("name") == "token-refresher" for c in pod["spec"].get("initContainers") or []
    ):
        ops = build_patch(pod=pod, namespace=req["namespace"], config=config,
            operator_namespace="token-refresher", report_audience="token-refresher-report")
    if ops:
        patch = base64.b64encode(json.dumps(ops).encode()).decode()
        response.update(patchType="JSONPatch", patch=patch)
    return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": response})
app = web.Application()
app.router.add_post("/mutate", mutate)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
web.run_app(app, host="127.0.0.1", port=int(port), ssl_context=context, print=None,
    access_log=None)
"""


def webhook_floor(
    plan: Plan, cluster: Cluster, creator: PodCreator, pods: Pods, work: Path, say: Progress
) -> dict[str, Any]:
    """The same interleaved creation through each stand-in webhook, the operator stopped."""
    from token_refresher_operator.devcert import write_self_signed
    from token_refresher_operator.registration import webhook_configuration

    section = "webhook"
    cp = cluster.start()
    if cluster.operator is not None:
        cluster.procs.stop(cluster.operator)
        cluster.operator = None
    cp.kubectl("delete", "mutatingwebhookconfiguration", "token-refresher-dev",
               "--ignore-not-found")  # fmt: skip
    (work / "stub").mkdir(parents=True, exist_ok=True)
    cert = write_self_signed(work / "stub")
    config = work / "stub" / "config.yaml"
    pem = "\n".join("    " + line for line in cert.pem.splitlines())
    config.write_text(
        "defaults:\n  format: raw\nreport:\n  url: https://127.0.0.1:9/report\n"
        f"  caBundle: |\n{pem}\n"
    )
    floor: dict[str, Any] = {}
    for mode in ("allow", "label", "operator-patch"):
        say.say(section, f"profile: the same pods through a stand-in webhook ({mode})")
        port = free_port()
        stub = cluster.procs.start(
            [sys.executable, "-c", _WEBHOOK_STUB, str(port), str(cert.cert_file),
             str(cert.key_file), mode, str(config)],
            stdout=subprocess.DEVNULL, stderr=(work / f"stub-{mode}.log").open("wb"),
        )  # fmt: skip
        try:
            wait_for(f"the {mode} stand-in", functools.partial(_listening, port), timeout=30)
            body = webhook_configuration(
                name="token-refresher-bench-stub",
                url=f"https://127.0.0.1:{port}/mutate",
                ca_bundle=cert.pem.encode("ascii"),
                operator_namespace="token-refresher",
            )
            cp.kubectl("apply", "-f", "-", input=json.dumps(body))
            if mode == "allow":
                time.sleep(2.0)  # nothing to see in a pod: give the apiserver time to load it
            else:

                def patched(mode: str = mode) -> bool:
                    _, _, injected = creator.batch(pods.make("injected", 1))
                    if mode == "operator-patch":
                        return injected == 1
                    name = f"injected-{pods.serial}"
                    got = cp.kubectl("-n", "bench-inject", "get", "pod", name, "-o", "json")
                    return bool(json.loads(got.stdout)["metadata"].get("labels"))

                wait_for(f"the {mode} stand-in to be called", patched, timeout=30, interval=0.5)
            with AdmissionLatency(cp) as latency:
                created = interleaved(
                    creator,
                    pods,
                    rounds=plan.pod_rounds,
                    per_round=max(1, plan.pods // plan.pod_rounds),
                    processes={"webhook": stub.pid, **cluster.control_plane_pids()},
                )
            alone = one_at_a_time(cp, creator, pods, max(5, plan.mutate_calls // 4))
        finally:
            cluster.procs.stop(stub)
        floor[mode] = {
            "plain_pods_per_s": round(created.rate("plain"), 1),
            "annotated_pods_per_s": round(created.rate("injected"), 1),
            "ratio": round(created.ratio, 3),
            "annotated_latency_p50_ms": round(created.latency_ms("injected", 50), 1),
            "cpu_ms_per_pod": created.cpu_ms_per_pod(),
            "apiserver_admission": latency.result,
            "apiserver_admission_one_at_a_time": alone,
        }
    cp.kubectl("delete", "mutatingwebhookconfiguration", "token-refresher-bench-stub")
    return floor


def _listening(port: int) -> bool:

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
