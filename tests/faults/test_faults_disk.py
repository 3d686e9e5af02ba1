"""Disk faults on a real filesystem: a full volume, a read-only volume, a directory the
sidecar may not write, and someone else deleting or replacing the file or its directory.

The token volume is a real tmpfs (a pod's `emptyDir: {medium: Memory}` *is* a tmpfs),
mounted for each test: `mount -t tmpfs -o size=64k` gives a genuine ENOSPC when full,
and `mount -o remount,ro` a genuine EROFS. That needs root (CAP_SYS_ADMIN); elsewhere
these tests skip, saying so. "Permission denied" runs the sidecar as another user
(`setpriv --reuid 65532`, the UID the operator injects it with), because root ignores
file modes: chmod 0555 on a directory stops every user but root.

Each case: a good token first; then the fault; the next refresh fails with a clear
error naming the path (/status last_error, an error log line, a report) while the last
good token stays readable and /readyz stays 200; then the fault is fixed and the next
attempt recovers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.harness import TokenReader, wait_until

pytestmark = [pytest.mark.idp, pytest.mark.slow]

SIDECAR_UID = 65532  # token_refresher_operator.patch.SIDECAR_UID


@dataclass
class Volume:
    """A tmpfs mounted at `path` for one test."""

    path: Path

    def remount(self, mode: str) -> None:
        _run("mount", "-o", f"remount,{mode}", str(self.path))

    def fill(self) -> Path:
        """Fill the volume to the last byte; the filler file is returned for removal."""
        filler = self.path / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass  # ENOSPC: full
        finally:
            os.close(fd)
        return filler


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if proc.returncode != 0:
        raise OSError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _unavailable(why: str) -> None:
    """A developer's unprivileged machine may skip the disk faults; CI (root) never does."""
    if os.environ.get("CI"):
        pytest.fail(f"disk fault tests must run in CI: {why}")
    pytest.skip(why)


@pytest.fixture
def volume() -> Iterator[Volume]:
    path = Path(tempfile.mkdtemp(prefix="tr-faults-volume-"))
    path.chmod(0o755)
    try:
        _run("mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(path))
    except OSError as exc:
        path.rmdir()
        _unavailable(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {exc}")
    try:
        yield Volume(path)
    finally:
        subprocess.run(["umount", str(path)], capture_output=True, check=False)
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """Credentials readable by the sidecar's non-root UID (tmp_path is root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="tr-faults-creds-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start(sidecars, idp, reports, public_dir: Path, output: Path, **extra):
    # The report receiver's CA and bearer token, readable by any UID.
    ca = public_dir / "report-ca.crt"
    bearer = public_dir / "report-token"
    shutil.copy(reports.ca_file, ca)
    shutil.copy(reports.token_file, bearer)
    ca.chmod(0o444)
    bearer.chmod(0o444)
    return sidecars.for_idp(
        idp,
        reports=reports,
        report_ca_file=ca,
        report_token_file=bearer,
        workdir=public_dir,
        output=output,
        jitter=0,
        min_refresh_interval=0,
        backoff_initial=0.1,
        backoff_max=0.3,
        **extra,
    )


def log_lines(sidecar, *levels: str) -> list[str]:
    return [line["msg"] for line in sidecar.logs() if line.get("level") in levels]


# --- the volume fails under the sidecar -------------------------------------------------


@dataclass(frozen=True)
class DiskFault:
    says: str  # in /status last_error.message and the log line
    breaks: Callable[[Volume, Path], object]
    fixes: Callable[[Volume, Path, object], None]
    as_sidecar_uid: bool = False


def _fill(volume: Volume, out: Path) -> Path:
    return volume.fill()


def _unfill(volume: Volume, out: Path, filler: object) -> None:
    assert isinstance(filler, Path)
    filler.unlink()


DISK_FAULTS = {
    "volume-full-ENOSPC": DiskFault("no space left on the volume", _fill, _unfill),
    "read-only-volume-EROFS": DiskFault(
        "the volume is mounted read-only",
        lambda volume, out: volume.remount("ro"),
        lambda volume, out, _: volume.remount("rw"),
    ),
    "directory-not-writable-EACCES": DiskFault(
        "permission denied",
        lambda volume, out: out.chmod(0o555),
        lambda volume, out, _: out.chmod(0o755),
        as_sidecar_uid=True,
    ),
}


@pytest.mark.parametrize("fault", list(DISK_FAULTS.values()), ids=list(DISK_FAULTS))
def test_a_failing_volume_keeps_the_last_token_reports_and_recovers(
    fault: DiskFault, volume: Volume, public_dir: Path, idps, reports, sidecars
) -> None:
    idp = idps(4)
    out = volume.path / "out"
    out.mkdir()
    preexec = []
    if fault.as_sidecar_uid:
        if shutil.which("setpriv") is None:
            _unavailable("setpriv (util-linux) is not installed: cannot run as another UID")
        os.chown(out, SIDECAR_UID, SIDECAR_UID)
        preexec = [
            "setpriv",
            f"--reuid={SIDECAR_UID}",
            f"--regid={SIDECAR_UID}",
            "--clear-groups",
            "--",
        ]
    sidecar = start(
        sidecars,
        idp,
        reports,
        public_dir,
        out / "token",
        refresh_ratio=0.25,  # a refresh every second
        preexec=preexec,
        start=False,
    )
    sidecar.preexec = preexec
    sidecar.start()
    with TokenReader(sidecar.output, allow_missing=False) as app:
        wait_until("the first token", lambda: app.reads)
        good = sidecar.output.read_bytes()
        undo = fault.breaks(volume, out)
        status = sidecar.wait_status(
            "a failed write", lambda s: s["consecutive_failures"] >= 2, timeout=3
        )
        last = status["last_error"]
        assert last["error"] == "output_error", last
        assert last["message"].startswith(f"cannot write {sidecar.output}: {fault.says}"), last
        assert last["permanent"] is False
        assert status["state"] == "retrying"
        assert sidecar.readyz() == 200
        assert sidecar.output.read_bytes() == good, "the last good token was touched"
        # A warning while the last token is still good; an error once it is not.
        assert last["message"] in log_lines(sidecar, "warning", "error")
        failing = reports.wait_for("failing", error="output_error")
        assert fault.says in failing["description"]

        fault.fixes(volume, out, undo)
        sidecar.wait_status("recovery", lambda s: s["state"] == "ready", timeout=20)
        assert sidecar.output.read_bytes() != good
        assert sidecar.readyz() == 200
        reports.wait_for("recovered")
    assert app.violations == [], app.violations
    assert [p.name for p in out.iterdir()] == ["token"], "temporary files left behind"
    assert reports.problems == []
    assert sidecar.stop() == 0


# --- someone else touches the file -------------------------------------------------------


SOMEONE_ELSE = {
    "file-deleted": lambda out: (out / "token").unlink(),
    "file-replaced": lambda out: _replace(out / "token", b"not a token"),
    "file-truncated-in-place": lambda out: (out / "token").open("w").close(),
    "directory-deleted": lambda out: shutil.rmtree(out),
}


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name("intruder")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@pytest.mark.parametrize("act", list(SOMEONE_ELSE.values()), ids=list(SOMEONE_ELSE))
def test_a_token_file_removed_or_replaced_by_someone_else_is_restored_at_once(
    act: Callable[[Path], None], volume: Volume, public_dir: Path, idps, reports, sidecars
) -> None:
    idp = idps(60)  # the next refresh is 40 s away: only the sidecar's check can restore it
    out = volume.path / "out"
    out.mkdir()
    sidecar = start(sidecars, idp, reports, public_dir, out / "token", refresh_ratio=0.7)
    wait_until("the first token", sidecar.output.exists)
    good = json.loads(sidecar.output.read_text())
    act(out)
    # The kubelet's readiness probe (every 10 s) is what notices in a pod.
    assert sidecar.readyz() == 200
    restored = json.loads(sidecar.output.read_text())
    assert (restored["access_token"], restored["expires_at"]) == (
        good["access_token"],
        good["expires_at"],
    )
    status = sidecar.status()
    assert status["refresh_count"] == 1, "restored from memory, not by asking the IdP again"
    assert status["state"] == "ready"
    assert (sidecar.output.stat().st_mode & 0o777) == 0o444
    warned = [line for line in sidecar.logs() if line.get("level") == "warning"]
    assert any(str(sidecar.output) in line["msg"] and "restored" in line["msg"] for line in warned)
    assert reports.received() == []  # nothing failed: nothing for kubectl describe
    assert sidecar.stop() == 0


def test_a_missing_volume_is_an_error_that_is_reported_until_it_is_back(
    volume: Volume, public_dir: Path, idps, reports, sidecars
) -> None:
    idp = idps(60)
    mount = volume.path / "mount"
    out = mount / "out"
    out.mkdir(parents=True)
    sidecar = start(sidecars, idp, reports, public_dir, out / "token", refresh_ratio=0.7)
    wait_until("the first token", sidecar.output.exists)
    shutil.rmtree(mount)  # the parent of OUTPUT's directory is gone too
    assert sidecar.readyz() == 503
    status = sidecar.wait_status("the failure", lambda s: s["consecutive_failures"] >= 1)
    message = status["last_error"]["message"]
    assert message == (
        f"cannot create the output directory {out}: the directory does not exist "
        "(its parent is missing: is the volume mounted?)"
    )
    assert status["ready"] is False
    assert message in log_lines(sidecar, "error")
    assert reports.wait_for("failing", error="output_error")["description"] == message
    assert not out.exists(), "the sidecar must not invent a tree where a volume belongs"
    time.sleep(0.5)
    mount.mkdir()
    sidecar.wait_status("recovery", lambda s: s["state"] == "ready", timeout=20)
    assert sidecar.readyz() == 200
    assert sidecar.output.exists()
    reports.wait_for("recovered")
    assert sidecar.stop() == 0
