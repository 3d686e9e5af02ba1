"""The images' lock files (hack/lock.py): every dependency pyproject.toml names is pinned
with hashes, from the pyproject.toml of this commit, and the Dockerfile installs nothing
else. The check needs no network: each lock records a digest of the lists it came from."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.chart.test_dockerfile import stages

REPO = Path(__file__).resolve().parents[1]
LOCKS = [
    "operator/requirements.lock",
    "sidecar/requirements.lock",
    "operator/build-requirements.lock",
]


def check(root: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "hack" / "lock.py"), "--check", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def copy_of_the_repo(tmp_path: Path) -> Path:
    for path in ["pyproject.toml", *LOCKS]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, tmp_path / path)
    return tmp_path


def test_the_lock_files_were_compiled_from_this_pyproject() -> None:
    proc = check()
    assert proc.returncode == 0, proc.stderr


def test_a_dependency_added_to_pyproject_fails_the_check(tmp_path: Path) -> None:
    root = copy_of_the_repo(tmp_path)
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(
        text.replace('    "pydantic>=2.10",\n', '    "pydantic>=2.10",\n    "left-pad>=1",\n', 1)
    )
    proc = check(root)
    assert proc.returncode == 1
    assert "sidecar/requirements.lock: left-pad>=1 is not pinned" in proc.stderr
    assert "operator/requirements.lock: compiled from other pyproject.toml" in proc.stderr
    assert "build-requirements.lock" not in proc.stderr  # its list did not change


def test_a_pin_without_hashes_or_out_of_step_fails_the_check(tmp_path: Path) -> None:
    root = copy_of_the_repo(tmp_path)
    sidecar = root / "sidecar" / "requirements.lock"
    text = re.sub(r"^(pydantic==)(\S+) \\$", r"\g<1>0.0.1", sidecar.read_text(), flags=re.M)
    sidecar.write_text(text)
    proc = check(root)
    assert proc.returncode == 1
    assert "sidecar/requirements.lock: pydantic==0.0.1 has no hash" in proc.stderr
    assert "sidecar/requirements.lock: pydantic==0.0.1, but operator/requirements.lock pins" in (
        proc.stderr
    )


def test_the_images_install_only_hash_checked_wheels_from_the_locks() -> None:
    runs = [i for instructions in stages().values() for i in instructions if i.startswith("RUN ")]
    pip_calls = [
        call for run in runs for call in run.split("&&") if re.search(r"(^|\s)pip\s", call)
    ]
    assert pip_calls
    for call in pip_calls:
        if " download " in call:
            assert "--require-hashes" in call, call
            assert "--only-binary=:all:" in call, call
        elif " install " in call:
            assert "--no-index" in call, call
            assert "--require-hashes -r" in call or "--no-deps /project/" in call, call
        elif " wheel " in call:
            assert "--no-index" in call, call
            assert "--no-build-isolation" in call, call
        else:
            assert " uninstall " in call, call
    locks = {m for run in runs for m in re.findall(r"-r (\S+\.lock)", run)}
    assert locks == set(LOCKS)
