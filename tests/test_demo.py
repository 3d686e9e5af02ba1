"""The README's demo command runs end to end, unattended, and leaves nothing behind.

This is the newcomer's first contact with the product, so CI runs it exactly as the
README says (`hack/demo.py --non-interactive`), only with a shorter watch window.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.cluster, pytest.mark.idp, pytest.mark.slow]


@pytest.mark.timeout(400)
def test_the_demo_runs_unattended_and_cleans_up() -> None:
    before = set(Path(tempfile.gettempdir()).glob("token-refresher-demo-*"))
    proc = subprocess.run(
        [sys.executable, str(REPO / "hack" / "demo.py"), "--non-interactive", "--watch", "8"],
        capture_output=True,
        text=True,
        timeout=380,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"{out[-3000:]}\n{proc.stderr[-3000:]}"
    for act in range(1, 7):
        assert f"[{act}/6]" in out
    assert '"restartPolicy": "Always"' in out  # the injected native sidecar is printed
    assert "refreshed" in out
    assert "expires in" in out
    assert "Warning   TokenRefreshFailed" in out  # kubectl shows the event
    assert "TokenRefreshRecovered" in out
    assert "done." in out
    after = set(Path(tempfile.gettempdir()).glob("token-refresher-demo-*"))
    assert after <= before, f"the demo left temp dirs behind: {sorted(after - before)}"
