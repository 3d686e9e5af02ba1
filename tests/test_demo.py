"""The README's demo command runs end to end, unattended, and leaves nothing behind.

This is the newcomer's first contact with the product, so CI runs it as the README says
(`hack/demo.py --non-interactive`), with a shorter watch window, on the suite's node
(TOKEN_REFRESHER_NODE: one node fits on a machine; `make demo` starts its own).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.node import DESCRIPTOR, Node

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.node, pytest.mark.idp, pytest.mark.slow]


@pytest.mark.timeout(600)
def test_the_demo_runs_unattended_and_cleans_up(node: Node) -> None:
    before = set(Path(tempfile.gettempdir()).glob("token-refresher-demo-*"))
    proc = subprocess.run(
        [sys.executable, "-m", "hack.demo", "--non-interactive", "--watch", "8"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=580,
        stdin=subprocess.DEVNULL,
        check=False,
        env={
            **os.environ,
            "TOKEN_REFRESHER_NODE": os.environ.get("TOKEN_REFRESHER_NODE", str(DESCRIPTOR)),
        },
    )
    out = proc.stdout
    assert proc.returncode == 0, f"{out[-3000:]}\n{proc.stderr[-3000:]}"
    for act in range(1, 7):
        assert f"[{act}/6]" in out
    assert '"restartPolicy": "Always"' in out  # the injected native sidecar is printed
    assert "IdP says active=True" in out  # kubectl exec: the app's token is accepted
    assert "refreshed" in out
    assert "TokenRefreshFailed" in out  # kubectl shows the event
    assert "TokenRefreshRecovered" in out
    assert "done." in out
    after = set(Path(tempfile.gettempdir()).glob("token-refresher-demo-*"))
    assert after <= before, f"the demo left temp dirs behind: {sorted(after - before)}"
    # The demo's release and namespace are gone (the node itself is the suite's).
    assert node.helm("list", "-A", "-q").stdout.strip() == ""
