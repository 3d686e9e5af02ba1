"""The project's container images, built here without a registry or a Docker engine.

hack/images.sh builds three images into buildah's storage: the pause image (from the
pause.c Kubernetes ships), and the project Dockerfile's `sidecar` and `operator` targets on
a local Debian python base. It exports each as an OCI archive in a cache outside the
repository, keyed by a hash of its inputs, so only the first call is slow (about two
minutes) and a warm one takes about a second. `images()` runs it, lets its progress through
to the terminal, and returns each image's reference and archive, which a node imports with
`ctr -n k8s.io images import --local ARCHIVE`. `python -m tests.images` builds them by hand.
"""

from __future__ import annotations

import collections
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NAMES", "Image", "images"]

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "hack" / "images.sh"
NAMES = ("pause", "sidecar", "operator")


@dataclass(frozen=True)
class Image:
    """One image: its name here, its reference (repository:tag) and its OCI archive."""

    name: str
    ref: str
    archive: Path


def images(*, build: bool = True) -> dict[str, Image]:
    """The images by name (pause, sidecar, operator); with build=False, only if already built.

    Raises RuntimeError, with the end of hack/images.sh's stderr, when it fails (with
    build=False: when an archive is missing).
    """
    cmd = [str(SCRIPT)] + ([] if build else ["--print"])
    tail: collections.deque[str] = collections.deque(maxlen=40)
    with subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        # stdout is three short lines, so reading stderr to its end first cannot block.
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line)
        out = proc.stdout.read()
        rc = proc.wait()
    if rc != 0:
        what = "failed" if build else "found images missing (run hack/images.sh)"
        raise RuntimeError(f"{' '.join(cmd)} {what} (exit {rc}):\n{''.join(tail)}")
    found: dict[str, Image] = {}
    for line in out.splitlines():
        name, ref, archive = line.split()
        found[name] = Image(name=name, ref=ref, archive=Path(archive))
    if sorted(found) != sorted(NAMES):
        raise RuntimeError(f"hack/images.sh printed {sorted(found)}, expected {list(NAMES)}")
    return found


if __name__ == "__main__":
    for image in images().values():
        print(image.name, image.ref, image.archive)
