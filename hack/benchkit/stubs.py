"""Stand-in webhooks that tell the apiserver's share of the admission cost from the
operator's (run with the full plan, after the operator's own measurement)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support import free_port, listening

from .apimetrics import interleaved_admission, one_at_a_time
from .cluster import Cluster, PodCreator, Pods
from .common import Plan, Progress, wait_for

# The stand-in webhook (allow, label, operator-patch), run by path in a fresh interpreter;
# `-P` prepends nothing to sys.path, so no module of this folder shadows another.
_WEBHOOK_STUB = Path(__file__).with_name("webhook_stub.py")


def webhook_floor(
    plan: Plan, cluster: Cluster, creator: PodCreator, pods: Pods, work: Path, say: Progress
) -> dict[str, Any]:
    """The same interleaved creation through each stand-in webhook, the operator stopped."""
    from token_refresher_operator.devcert import write_self_signed
    from token_refresher_operator.registration import webhook_configuration

    section = "webhook"
    cp = cluster.start()
    cluster.stop_operator()
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
            [sys.executable, "-P", str(_WEBHOOK_STUB), str(port), str(cert.cert_file),
             str(cert.key_file), mode, str(config)],
            stdout=subprocess.DEVNULL, stderr=(work / f"stub-{mode}.log").open("wb"),
        )  # fmt: skip
        try:
            wait_for(f"the {mode} stand-in", functools.partial(listening, port), timeout=30)
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

                wait_for(f"the {mode} stand-in to be called", patched, timeout=30, every=0.5)
            created, admission = interleaved_admission(
                plan, cluster, creator, pods, ("webhook", stub.pid)
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
            "apiserver_admission": admission,
            "apiserver_admission_one_at_a_time": alone,
        }
    cp.kubectl("delete", "mutatingwebhookconfiguration", "token-refresher-bench-stub")
    return floor
