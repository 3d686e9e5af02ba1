"""checkov's Kubernetes checks on what the chart renders, in every values mode.

checkov's open-source output has no severities, so the rule is stricter: no failed check
at all, except the findings accepted below, each for a named object and with the reason.
An accepted finding that no longer occurs fails too, so the list cannot rot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.chart.helm import FULLNAME, VALUES, Chart

TEST_POD = f"{FULLNAME}-test"

# (check, kind, object name) -> why the chart accepts it.
ACCEPTED: dict[tuple[str, str, str], str] = {
    # Image digests cannot be known before the images are built and pushed (and not at
    # all offline); image.digest and sidecar.image.digest pin them, and the "digests"
    # rendering below proves the check passes then.
    ("CKV_K8S_43", "Deployment", FULLNAME): "digest set by image.digest",
    ("CKV_K8S_43", "Pod", TEST_POD): "digest set by sidecar.image.digest",
    # IfNotPresent is right for immutable tags and digests; Always would make every
    # operator restart depend on the registry. Users can set pullPolicy.
    ("CKV_K8S_15", "Deployment", FULLNAME): "pullPolicy is a value",
    ("CKV_K8S_15", "Pod", TEST_POD): "pullPolicy is a value",
    # The operator calls the API (TokenReview, Events, pods): it needs its token. The
    # ServiceAccount itself sets automountServiceAccountToken: false.
    ("CKV_K8S_38", "Deployment", FULLNAME): "the operator is an API client",
    # No CPU limit: CFS throttling of the admission webhook turns into timeouts, and with
    # failurePolicy Fail into denied pods. resources.limits.cpu is available to users.
    ("CKV_K8S_11", "Deployment", FULLNAME): "CPU throttling on the pod-creation path",
    # The test pod runs to completion in seconds: there is nothing to probe.
    ("CKV_K8S_8", "Pod", TEST_POD): "run-to-completion test pod",
    ("CKV_K8S_9", "Pod", TEST_POD): "run-to-completion test pod",
    # cert-manager mode: the test pod reads ca.crt, a public CA certificate, from the
    # TLS Secret through an env var; nothing secret is exposed.
    ("CKV_K8S_35", "Pod", TEST_POD): "ca.crt is public",
    # The webhook is called by the kube-apiserver (host network, no pod selector matches
    # it) and /report by injected pods in every namespace, so a NetworkPolicy would have
    # to admit everyone on those ports anyway; cluster network policy is the cluster's.
    ("CKV2_K8S_6", "Pod", FULLNAME): "must be reachable from the apiserver and all pods",
    ("CKV2_K8S_6", "Pod", TEST_POD): "test pod, deleted when it succeeds",
}

DIGESTS = {
    "image": {"digest": "sha256:" + "1" * 64},
    "sidecar": {"image": {"digest": "sha256:" + "2" * 64}},
}


def checkov() -> str:
    """checkov from the dev extra (next to this Python), or CHECKOV=<path>."""
    candidates = [os.environ.get("CHECKOV"), str(Path(sys.executable).parent / "checkov")]
    for candidate in [*candidates, shutil.which("checkov")]:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("checkov is not installed: install the dev extra (pip install -e '.[dev]')")


def _findings(report: Any) -> set[tuple[str, str, str, str]]:
    """(file stem, check, kind, name) of every failed check."""
    reports = report if isinstance(report, list) else [report]
    found = set()
    for rep in reports:
        for check in rep.get("results", {}).get("failed_checks", []):
            # "Kind.namespace.name", graph checks append ".label-value" pairs to the name.
            kind, _, rest = check["resource"].split(".", 2)
            name = rest.split(".", 1)[0]
            found.add((Path(check["file_path"]).stem, check["check_id"], kind, name))
    return found


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_checkov_finds_nothing_but_the_accepted_findings(chart: Chart, tmp_path: Path) -> None:
    for mode, values in {**VALUES, "digests": DIGESTS}.items():
        (tmp_path / f"{mode}.yaml").write_text(chart.template_text(values))
    proc = subprocess.run(
        [checkov(), "--directory", str(tmp_path), "--framework", "kubernetes",
         "--output", "json", "--quiet", "--skip-download"],
        capture_output=True, text=True, timeout=540, check=False,
    )  # fmt: skip
    assert proc.stdout.strip(), f"checkov printed no report:\n{proc.stderr[-3000:]}"
    findings = _findings(json.loads(proc.stdout))

    unexpected = sorted(
        f for f in findings if f[1:] not in ACCEPTED or (f[0] == "digests" and f[1] == "CKV_K8S_43")
    )
    assert unexpected == [], "checkov failures (file, check, kind, name)"
    stale = sorted(set(ACCEPTED) - {f[1:] for f in findings})
    assert stale == [], "accepted findings that no longer occur: drop them from ACCEPTED"
