"""`make bench` works end to end: its quick run starts every part, stops every process it
started and writes JSON with every section.

Only the command is tested here, never a figure: a benchmark's timings depend on the
machine, so no test judges them (docs/benchmarks.md has the method and the figures).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.node import DESCRIPTOR, Node

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.cluster, pytest.mark.idp, pytest.mark.node, pytest.mark.slow]


@pytest.mark.timeout(230)
def test_the_quick_bench_writes_every_section(tmp_path: Path, node: Node) -> None:
    out = tmp_path / "bench.json"
    before = set(Path(tempfile.gettempdir()).glob("token-refresher-bench-*"))
    proc = subprocess.run(
        [sys.executable, "-m", "hack.bench", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=220,
        stdin=subprocess.DEVNULL,
        check=False,
        # The container section uses the suite's node: only one fits on a machine.
        env={
            **os.environ,
            "TOKEN_REFRESHER_NODE": os.environ.get("TOKEN_REFRESHER_NODE", str(DESCRIPTOR)),
        },
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "about" in proc.stderr  # progress lines say how long is left
    assert "measure" in proc.stdout  # the table

    results = json.loads(out.read_text())
    assert set(results) == {
        "meta",
        "sidecar",
        "container",
        "webhook",
        "fleet",
        "reports",
        "family",
        "targets",
    }
    assert results["meta"]["quick"] is True

    sidecar = results["sidecar"]
    assert sidecar["steady"]["refreshes"] >= results["meta"]["plan"]["refreshes"]
    assert sidecar["steady"]["exit_code"] == sidecar["idle"]["exit_code"] == 0
    assert sidecar["steady"]["rss_mib"] > 0
    assert sidecar["idle"]["cpu_seconds"] >= 0
    assert sidecar["first_token"]["sidecar_s"] > 0
    assert sidecar["first_token"]["bare_httpx2_s"] > 0
    assert sidecar["tokens"]["rss_1_token_mib"] > 0
    assert sidecar["tokens"]["rss_5_tokens_mib"] > 0

    for pod in results["container"]["pods"].values():
        assert pod["refreshes"] >= results["meta"]["plan"]["refreshes"]
        assert pod["processes"] == 1  # the cgroup found is the sidecar's container
        assert pod["working_set_mib"] > 0
        assert pod["cpu_seconds_total"] > 0
    # The bench's namespace is deleted (its pods go in the background).
    namespace = results["container"]["namespace"]
    phase = node.kubectl(
        "get", "namespace", namespace, "-o", "jsonpath={.status.phase}", check=False
    )
    assert phase.stdout in ("", "Terminating")

    webhook = results["webhook"]
    # Every annotated pod got the sidecar, no plain pod did.
    assert webhook["injected"] == {"plain": 0, "injected": webhook["pods_per_kind"]}
    assert webhook["plain_pods_per_s"] > 0
    assert webhook["injected_pods_per_s"] > 0

    fleet = results["fleet"]
    assert {(c["jitter"], c["start_up_window"]) for c in fleet["cases"]} == {
        (0.1, True),
        (0.1, False),
        (0.0, True),
        (0.0, False),
    }

    reports = results["reports"]
    assert reports["statuses"] == {"202": reports["reports_sent"]}
    assert reports["accepted"] == reports["reports_sent"]

    assert {t["target"] for t in results["targets"]} == {
        "sidecar_rss_mib",
        "first_token_ratio",
        "five_tokens_extra_rss_mib",
        "container_working_set_mib",
        "idle_cpu_seconds_per_hour",
        "pod_creation_ratio",
        "operator_cpu_ms_per_injected_pod",
        "admission_p99_ms",
        "fleet_peak_to_mean",
        "follower_age_p99_s",
    }  # and pod_creation_ratio_to_stand_in, which needs the full plan's stand-ins
    assert all(t["met"] is None for t in results["targets"])  # --quick judges nothing

    after = set(Path(tempfile.gettempdir()).glob("token-refresher-bench-*"))
    assert after <= before, f"the bench left temp dirs behind: {sorted(after - before)}"
