"""`make bench`: what the sidecar costs, what injection costs, how a fleet loads the IdP.

Six measurements, each against the real thing on this machine, in one run
(the sections live in hack/benchkit/):

1. sidecar   — resident memory after 200 refreshes of 5-second tokens from a real
               oidc-provider, CPU of an idle sidecar over a minute, time to the first
               token file against a bare httpx2 token request from a fresh interpreter,
               and the RSS of a sidecar serving 5 tokens against one serving 1;
               with the full plan, where the memory goes (by package, single imports);
2. container — the same 200 refreshes by the sidecar in a real container, in a pod as
               injection makes it, on the real local node: the cgroup's memory working
               set (what `kubectl top` shows) and CPU; attaches to the node that
               TOKEN_REFRESHER_NODE describes, else starts one and stops it afterwards;
3. webhook   — pods created per second through a real kube-apiserver with injection
               (operator in DEV mode) and without, interleaved in the same run; the
               operator's CPU per pod; admission latency seen by the client, by the
               apiserver (its histogram of our webhook, also for pods created one at a
               time) and at /mutate directly; with the full plan, the same through
               stand-in webhooks, to tell the apiserver's share and the floor;
4. fleet     — 1000 sidecar schedules on a simulated clock, with the sidecar's own
               scheduling functions: IdP requests per second, peak against mean;
5. reports   — accepted failure reports per second at the operator's /report endpoint
               (serve_reports, TokenReview cache) against the real apiserver;
6. family    — replicas sharing one refresh-token family through a Secret on the real
               apiserver, at an oidc-provider that rotates it: apiserver requests per
               refresh of the whole workload, and how long after the holder a follower
               has the new access token.

It says what it is doing and how long is left, prints a table with the targets, and
writes every figure to bench-results.json (--out). --quick runs tiny counts and judges
nothing (the smoke test runs it). No timing is asserted anywhere: a benchmark reports,
the tests judge behaviour. Every process started here runs in a session of its own and
is stopped on the way out, Ctrl-C and SIGTERM included. Method and findings:
docs/benchmarks.md. Run as `python -m hack.bench` from the repository root (hack/bench.sh
does), so `hack.benchkit` and the test harness import as packages.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hack.benchkit.cluster import Cluster
from hack.benchkit.common import QUICK, REPO, SECTIONS, Plan, Processes, Progress
from hack.benchkit.container import bench_container
from hack.benchkit.family import LIFETIME, bench_family
from hack.benchkit.fleet import bench_fleet
from hack.benchkit.reports import bench_reports
from hack.benchkit.sidecar import bench_sidecar
from hack.benchkit.table import table, verdicts
from hack.benchkit.webhook import bench_webhook


def estimates(plan: Plan) -> dict[str, float]:
    """Rough seconds per section on a 2-CPU machine, for the 'how long is left' lines."""
    return {
        "fleet": 2.0,
        "sidecar": max(plan.refreshes * 0.55, plan.idle_seconds)
        + plan.ttft_runs * 1.5
        + plan.token_rounds * 6
        + (25 if plan.profile else 3)
        + 5,
        # A node of our own takes a minute and a half to start and stop.
        "container": 20
        + plan.refreshes * 0.5
        + (0 if os.environ.get("TOKEN_REFRESHER_NODE") else 90),
        "webhook": 8 + plan.pods * 0.02 + (25 if plan.profile else 0),
        "reports": 5 + plan.report_pods * 0.1 + plan.reports * 0.005,
        "family": 10 + plan.family_rotations * LIFETIME * 0.55,
    }


@contextlib.contextmanager
def _terminated_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the cleanups run either way."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.bench", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts, nothing judged")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench-results.json", help="where the JSON goes"
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, of: {', '.join(SECTIONS)}",
    )
    opts = parser.parse_args(argv)
    sections = [s.strip() for s in opts.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    plan = QUICK if opts.quick else Plan()
    say = Progress()
    estimate = estimates(plan)
    order = [
        s
        for s in ("fleet", "sidecar", "container", "webhook", "reports", "family")
        if s in sections
    ]
    results: dict[str, Any] = {
        "meta": {
            "quick": opts.quick,
            "plan": asdict(plan),
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "kernel": platform.release(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    }
    procs = Processes()
    work = Path(tempfile.mkdtemp(prefix="token-refresher-bench-"))
    cluster = Cluster(work / "cluster-sections", procs, say)
    try:
        with _terminated_as_interrupt():
            for index, section in enumerate(order):
                left = sum(estimate[s] for s in order[index:])
                say.say(
                    section,
                    f"starting (about {estimate[section]:.0f} s; about {left / 60:.1f} min "
                    "left in all)",
                )
                if section == "fleet":
                    results["fleet"] = bench_fleet(plan, say)
                elif section == "sidecar":
                    results["sidecar"] = bench_sidecar(plan, work / "sidecar", procs, say)
                elif section == "container":
                    results["container"] = bench_container(plan, work / "container", say)
                elif section == "webhook":
                    results["webhook"] = bench_webhook(plan, cluster, work / "webhook", say)
                elif section == "reports":
                    results["reports"] = bench_reports(plan, cluster, work / "reports", procs, say)
                else:
                    results["family"] = bench_family(plan, cluster, work / "family", procs, say)
    except KeyboardInterrupt:
        say.say("bench", "interrupted: stopping everything it started")
        return 130
    finally:
        cluster.stop()
        procs.close()
        shutil.rmtree(work, ignore_errors=True)
    results["targets"] = verdicts(results, judge=not opts.quick)
    results["meta"]["seconds"] = round(time.monotonic() - say.started, 1)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\n{opts.out} written ({results['meta']['seconds']:.0f} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
