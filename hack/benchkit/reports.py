"""Section 5, the report endpoint: accepted failure reports per second at
serve_reports against the real apiserver, with its TokenReview cache.

`python -m hack.benchkit.reports CONFIG` runs the endpoint in a process of its own."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
from tests.controlplane import ControlPlane
from tests.rbac import report_endpoint_rbac
from tests.support import free_port, stop_process

from .cluster import Cluster, pod_manifest
from .common import REPO, Plan, Processes, Progress, percentile

# The production limiter (5 reports/s per pod, bursts of 20) would make this a
# benchmark of the limiter; the endpoint is measured with one that never refuses.
_BENCH_LIMIT = {"rate": 1e9, "burst": 10**9}


def serve_reports_process(config: dict[str, Any]) -> None:
    """`python -m hack.benchkit.reports CONFIG`: serve_reports in a process of its own, so the
    load generator does not share its interpreter. Prints `ready`, and its counters on exit."""
    from kubernetes import client

    from token_refresher_operator.config import OperatorSettings
    from token_refresher_operator.report import RateLimiter, ReportMetrics
    from token_refresher_operator.reportserver import serve_reports

    configuration = client.Configuration()
    configuration.host = config["server"]
    configuration.ssl_ca_cert = config["ca_file"]
    configuration.api_key = {"authorization": f"Bearer {config['token']}"}
    api_client = client.ApiClient(configuration)
    settings = OperatorSettings(
        listen_host="127.0.0.1",
        report_port=config["port"],
        tls_cert_file=Path(config["cert"]),
        tls_key_file=Path(config["key"]),
    )
    metrics = ReportMetrics()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        started = asyncio.Event()
        task = asyncio.create_task(
            serve_reports(
                settings=settings,
                stop=stop,
                api_client=api_client,
                metrics=metrics,
                limiter=RateLimiter(**config["limit"]),
                started=started,
            )
        )
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        print("ready", flush=True)
        await task

    asyncio.run(main())
    print(json.dumps({"accepted": metrics.accepted, "rejected": metrics.rejected}), flush=True)


def _apiserver_requests(cp: ControlPlane, resource: str, verb: str) -> int:
    """apiserver_request_total for one resource and verb, from the apiserver's metrics."""
    text = cp.kubectl("get", "--raw", "/metrics").stdout
    total = 0
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        wanted = labels.get("resource") == resource and labels.get("verb") == verb
        if wanted and not labels.get("subresource"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def bench_reports(
    plan: Plan, cluster: Cluster, work: Path, procs: Processes, say: Progress
) -> dict[str, Any]:
    from token_refresher_operator.devcert import write_self_signed

    section = "reports"
    cp = cluster.start()
    ns = "bench-report"
    cp.kubectl("create", "namespace", ns)
    cp.kubectl("-n", ns, "create", "serviceaccount", "app")
    cp.kubectl("apply", "-f", "-", input=report_endpoint_rbac(ns))
    say.say(section, f"{plan.report_pods} pods with the injected marker, a bound token each")
    uids: dict[str, str] = {}
    for n in range(plan.report_pods):
        name = f"reporter-{n}"
        pod = pod_manifest(name, ns, inject=False)
        pod["metadata"]["annotations"] = {"token-refresher.io/injected": "true"}
        created = json.loads(
            cp.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(pod)).stdout
        )
        uids[name] = created["metadata"]["uid"]
    tokens = {
        name: cp.kubectl(
            "-n", ns, "create", "token", "app", "--audience", "token-refresher-report",
            "--bound-object-kind", "Pod", "--bound-object-name", name,
            "--bound-object-uid", uid,
        ).stdout.strip()
        for name, uid in uids.items()
    }  # fmt: skip
    (work / "report-tls").mkdir(parents=True)
    tls = write_self_signed(work / "report-tls")
    port = free_port()
    config = {
        "server": cp.server,
        "ca_file": str(cp.ca_file),
        "token": cp.kubectl("-n", ns, "create", "token", "operator").stdout.strip(),
        "port": port,
        "cert": str(tls.cert_file),
        "key": str(tls.key_file),
        "limit": _BENCH_LIMIT,
    }
    server = procs.start(
        [sys.executable, "-m", "hack.benchkit.reports", json.dumps(config)],
        stdout=subprocess.PIPE,
        stderr=(work / "report-server.log").open("wb"),
        text=True,
        cwd=REPO,  # where `hack` and `tests` import from
    )
    assert server.stdout is not None
    if server.stdout.readline().strip() != "ready":
        tail = (work / "report-server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the report endpoint did not start:\n{tail}")

    url = f"https://127.0.0.1:{port}/report"
    names = list(uids)
    local = threading.local()
    clients: list[httpx2.Client] = []
    lock = threading.Lock()

    def post(n: int) -> tuple[int, float]:
        http = getattr(local, "http", None)
        if http is None:
            context = ssl.create_default_context(cafile=str(tls.cert_file))
            http = local.http = httpx2.Client(verify=context, trust_env=False, timeout=30)
            with lock:
                clients.append(http)
        name = names[n % len(names)]
        report = {
            "namespace": ns, "pod": name, "uid": uids[name], "state": "failing",
            "error": "invalid_client", "description": "Client authentication failed",
            "consecutive_failures": 1 + n // len(names), "since": "2026-11-22T01:00:00Z",
        }  # fmt: skip
        started = time.perf_counter()
        got = http.post(url, json=report, headers={"Authorization": f"Bearer {tokens[name]}"})
        return got.status_code, time.perf_counter() - started

    def run(count: int, offset: int = 0) -> tuple[float, list[tuple[int, float]]]:
        with ThreadPoolExecutor(plan.report_threads) as pool:
            started = time.perf_counter()
            results = list(pool.map(post, range(offset, offset + count)))
            return time.perf_counter() - started, results

    try:
        reviews_before = _apiserver_requests(cp, "tokenreviews", "POST")
        pod_reads_before = _apiserver_requests(cp, "pods", "GET")
        say.say(
            section, f"cold: the first report of each of {len(names)} pods (a TokenReview each)"
        )
        cold_wall, cold = run(len(names))
        say.say(section, f"warm: {plan.reports} reports, {plan.report_threads} client threads")
        warm_wall, warm = run(plan.reports, offset=len(names))
        reviews = _apiserver_requests(cp, "tokenreviews", "POST") - reviews_before
        pod_reads = _apiserver_requests(cp, "pods", "GET") - pod_reads_before
    finally:
        for http in clients:
            http.close()
        stop_process(server)
    counters = json.loads(server.stdout.read().strip().splitlines()[-1])
    statuses: dict[str, int] = {}
    for status, _ in cold + warm:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    warm_latency = [t for _, t in warm]
    return {
        "pods": len(names),
        "client_threads": plan.report_threads,
        "limiter": "RateLimiter(rate=1e9, burst=1e9): never refuses; production is 5/s per "
        "pod, bursts of 20 (so one pod cannot flood; the endpoint's capacity is measured here)",
        "cold_reports_per_s": round(len(cold) / cold_wall, 1),
        "warm_reports_per_s": round(len(warm) / warm_wall, 1),
        "warm_latency_ms": {
            "p50": round(percentile(warm_latency, 50) * 1000, 1),
            "p99": round(percentile(warm_latency, 99) * 1000, 1),
        },
        "statuses": statuses,
        "accepted": sum(counters["accepted"].values()),
        "token_reviews": reviews,
        "pod_reads": pod_reads,
        "reports_sent": len(cold) + len(warm),
    }


if __name__ == "__main__":
    serve_reports_process(json.loads(sys.argv[1]))
