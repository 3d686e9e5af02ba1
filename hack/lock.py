"""The images' lock files: every Python dependency pinned with its hashes, from pyproject.toml.

The Dockerfile installs from these files only (`pip --require-hashes`), so one commit
builds the same images whenever it is built:

    sidecar/requirements.lock         the sidecar image: pyproject's `dependencies`
    operator/requirements.lock        the operator image: `dependencies` + the `operator` extra
    operator/build-requirements.lock  the build backend (`build-system.requires`) that turns
                                      the project into a wheel for both images

They sit in the source roots because the image build context is pyproject.toml, README.md,
the Dockerfile and those two folders, nothing else. Each file's header records a digest of
the pyproject lists it was compiled from; `--check` (run by tests/test_lockfiles.py)
fails when pyproject.toml changed since, or when a file lost a pin, and needs no network.

    .venv/bin/python hack/lock.py           recompile all three (uv, from PyPI), keeping
                                            the current pins where they still fit
    .venv/bin/python hack/lock.py --upgrade recompile with the newest versions
    .venv/bin/python hack/lock.py --check   are they current? (exit 1 with the reason)

The sidecar's lock is compiled with the operator's as constraints, so both images run the
same version of every package they share. uv is installed on first use, pinned, into a
venv of its own (.venv/opt/uv), like checkov.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UV_VERSION = "0.13.8"
# The Python and platform of the images (the Dockerfile's PYTHON_IMAGE); uv still records
# the hashes of every wheel of a pinned version, so arm64 builds verify too.
PYTHON = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
DIGEST_LINE = re.compile(r"^# pyproject-digest: (sha256:[0-9a-f]{64})$", re.MULTILINE)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.MULTILINE)
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class Lock:
    """One lock file: where it lives, what it is for, and which pyproject lists it pins."""

    path: str
    purpose: str
    lists: tuple[str, ...]  # keys of `requirement_lists`


LOCKS = (
    Lock("operator/requirements.lock", "the operator image", ("dependencies", "operator")),
    Lock("sidecar/requirements.lock", "the sidecar image", ("dependencies",)),
    Lock("operator/build-requirements.lock", "the build backend", ("build-system",)),
)


def requirement_lists(pyproject: Path) -> dict[str, list[str]]:
    """pyproject's requirement lists that the images install, by name."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    project = data["project"]
    return {
        "dependencies": list(project.get("dependencies", [])),
        "operator": list(project.get("optional-dependencies", {}).get("operator", [])),
        "build-system": list(data.get("build-system", {}).get("requires", [])),
    }


def digest(lists: dict[str, list[str]], names: tuple[str, ...]) -> str:
    """The digest of some requirement lists, as recorded in a lock file's header."""
    chosen = {name: lists[name] for name in names}
    text = json.dumps(chosen, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """Pinned versions in a lock file, by canonical name."""
    return {canonical(name): version for name, version in _PIN.findall(text)}


def problems(root: Path) -> list[str]:
    """Why the lock files under `root` do not match its pyproject.toml; [] when they do."""
    lists = requirement_lists(root / "pyproject.toml")
    found: list[str] = []
    texts: dict[str, str] = {}
    for lock in LOCKS:
        path = root / lock.path
        if not path.is_file():
            found.append(f"{lock.path}: missing; run hack/lock.py")
            continue
        text = texts[lock.path] = path.read_text(encoding="utf-8")
        recorded = DIGEST_LINE.search(text)
        want = digest(lists, lock.lists)
        if recorded is None:
            found.append(f"{lock.path}: no '# pyproject-digest:' line; run hack/lock.py")
        elif recorded[1] != want:
            found.append(
                f"{lock.path}: compiled from other pyproject.toml {' and '.join(lock.lists)} "
                "lists than the current ones; run hack/lock.py"
            )
        pinned = pins(text)
        for requirement in (r for key in lock.lists for r in lists[key]):
            match = _NAME.match(requirement)
            name = canonical(match[1]) if match else requirement
            if name == "token-refresher":
                continue
            if name not in pinned:
                found.append(f"{lock.path}: {requirement} is not pinned")
        for entry in text.replace("\\\n", " ").splitlines():  # continuation lines joined
            if _PIN.match(entry) and "--hash=sha256:" not in entry:
                found.append(f"{lock.path}: {entry.split()[0]} has no hash")
    operator, sidecar = texts.get(LOCKS[0].path), texts.get(LOCKS[1].path)
    if operator is not None and sidecar is not None:
        in_operator = pins(operator)
        for name, version in sorted(pins(sidecar).items()):
            if in_operator.get(name) != version:
                found.append(
                    f"{LOCKS[1].path}: {name}=={version}, but {LOCKS[0].path} pins "
                    f"{in_operator.get(name, 'nothing')}: recompile both with hack/lock.py"
                )
    return found


def uv() -> Path:
    """uv, pinned, in a venv of its own; installed on first use."""
    venv = REPO / ".venv" / "opt" / "uv"
    exe = venv / "bin" / "uv"
    stamp = venv / f".installed-{UV_VERSION}"
    if not stamp.exists():
        print(f"[lock] installing uv {UV_VERSION} into {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, f"uv=={UV_VERSION}"], check=True)
        stamp.touch()
    return exe


def compile_lock(
    lock: Lock, lists: dict[str, list[str]], *, constraint: Path | None, upgrade: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "requirements.in"
        source.write_text("".join(f"{r}\n" for key in lock.lists for r in lists[key]))
        out = Path(tmp) / "out.txt"
        current = REPO / lock.path
        if current.is_file() and not upgrade:
            # uv keeps the pins of the output file it finds where they still fit: adding a
            # dependency does not move every other one.
            out.write_text(current.read_text(encoding="utf-8"), encoding="utf-8")
        argv = [str(uv()), "pip", "compile", "--quiet", "--native-tls", "--generate-hashes"]
        argv += ["--no-header", "--python-version", PYTHON, "--python-platform", PLATFORM]
        if constraint is not None:
            argv += ["--constraint", str(constraint)]
        if upgrade:
            argv += ["--upgrade"]
        subprocess.run([*argv, "-o", str(out), str(source)], check=True, cwd=REPO)
        body = out.read_text(encoding="utf-8").replace(str(source), "pyproject.toml")
    header = (
        f"# The pinned Python dependencies of {lock.purpose}: pyproject.toml's "
        f"{' + '.join(lock.lists)}.\n"
        "# Generated by hack/lock.py (uv pip compile --generate-hashes); do not edit by hand.\n"
        f"# pyproject-digest: {digest(lists, lock.lists)}\n"
    )
    (REPO / lock.path).write_text(header + body, encoding="utf-8")
    print(f"[lock] wrote {lock.path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check, do not compile")
    parser.add_argument(
        "--upgrade", action="store_true", help="newest versions, not the current pins"
    )
    parser.add_argument("--root", type=Path, default=REPO, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.check:
        found = problems(args.root)
        for line in found:
            print(f"lock: {line}", file=sys.stderr)
        return 1 if found else 0
    lists = requirement_lists(REPO / "pyproject.toml")
    operator = REPO / LOCKS[0].path
    compile_lock(LOCKS[0], lists, constraint=None, upgrade=args.upgrade)
    compile_lock(LOCKS[1], lists, constraint=operator, upgrade=args.upgrade)
    compile_lock(LOCKS[2], lists, constraint=None, upgrade=args.upgrade)
    return 0 if not problems(REPO) else 1


if __name__ == "__main__":
    sys.exit(main())
