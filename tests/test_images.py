"""The built images themselves, run with buildah as Kubernetes runs them: as UID/GID 65532.

Out-of-image tests run the code as root from the repository's venv, so they cannot see
what only the image gets wrong: a user with no passwd entry, a missing console script, pip
left behind. These tests build the images with hack/images.sh (cached; see tests/images.py)
and run commands in working containers (`buildah run --isolation chroot`, which shares the
host's network, so the operator reaches the test control plane on 127.0.0.1).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controlplane import ControlPlane
from tests.images import Image, images
from tests.support import WaitTimeout, free_port, http_ok, start_process, wait_until

USER = "65532:65532"


@pytest.fixture(scope="module")
def built() -> dict[str, Image]:
    return images(build=True)


def _buildah(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["buildah", *args], capture_output=True, text=True, check=check)


@contextlib.contextmanager
def container(image: Image) -> Iterator[str]:
    """A buildah working container of `image`, removed afterwards (with its mounts)."""
    made = _buildah("from", "--pull=never", image.ref, check=False)
    if made.returncode != 0:  # buildah's storage lost it; the archive is what counts
        made = _buildah("from", f"oci-archive:{image.archive}")
    name = made.stdout.strip().splitlines()[-1]
    try:
        yield name
    finally:
        _buildah("rm", name, check=False)


def run_in(
    name: str, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    envs = [f"--env={k}={v}" for k, v in (env or {}).items()]
    return _buildah(
        "run", "--isolation", "chroot", f"--user={USER}", *envs, name, "--", *argv, check=False
    )


def image_config(image: Image) -> dict[str, object]:
    out = _buildah("inspect", "--type", "image", image.ref, check=False)
    if out.returncode != 0:
        out = _buildah("inspect", "--type", "image", f"oci-archive:{image.archive}")
    config: dict[str, object] = json.loads(out.stdout)["OCIv1"]["config"]
    return config


def test_images_run_as_65532(built: dict[str, Image]) -> None:
    for name in ("sidecar", "operator"):
        assert image_config(built[name]).get("User") == USER, name


def test_sidecar_entrypoint_runs_as_65532(built: dict[str, Image]) -> None:
    entrypoint = image_config(built["sidecar"])["Entrypoint"]
    assert entrypoint == ["token-refresher"]
    with container(built["sidecar"]) as c:
        out = run_in(c, *entrypoint, "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: token-refresher" in out.stdout


@pytest.mark.parametrize("name", ["sidecar", "operator"])
def test_image_has_no_pip(built: dict[str, Image], name: str) -> None:
    check = (
        "import importlib.util, shutil, sys\n"
        "left = [m for m in ('pip', 'setuptools', 'wheel') if importlib.util.find_spec(m)]\n"
        "left += [p for p in map(shutil.which, ('pip', 'pip3', 'pip3.11', 'wheel')) if p]\n"
        "print(left)\n"
        "sys.exit(1 if left else 0)\n"
    )
    with container(built[name]) as c:
        out = run_in(c, "python", "-c", check)
    assert out.returncode == 0, f"left in the {name} image: {out.stdout}{out.stderr}"


def test_operator_identity_needs_no_passwd_entry(built: dict[str, Image]) -> None:
    """UID 65532 has no passwd entry in the image: kopf's own identity (getpass) raises there."""
    check = (
        "import getpass, socket\n"
        "from kopf._core.engines import peering\n"
        "from token_refresher_operator.kopfsetup import operator_identity\n"
        "try:\n"
        "    peering.detect_own_id(manual=False)\n"
        "except KeyError:\n"
        "    print('kopf: KeyError')\n"
        "assert operator_identity() == socket.gethostname(), operator_identity()\n"
        "print('ours:', operator_identity())\n"
    )
    with container(built["operator"]) as c:
        out = run_in(c, "python", "-c", check)
        with_pod_id = run_in(
            c,
            "python",
            "-c",
            "from token_refresher_operator.kopfsetup import operator_identity as i; print(i())",
            env={"POD_ID": "operator-abc"},
        )
    assert out.returncode == 0, out.stdout + out.stderr
    # The precondition of the crash this guards against still holds in the image.
    assert "kopf: KeyError" in out.stdout
    assert with_pod_id.stdout.strip() == "operator-abc", with_pod_id.stderr


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _leaf(pid: int) -> int:
    """The innermost process under `pid` (buildah -> buildah-chroot-exec -> the command)."""
    while kids := _children(pid):
        pid = kids[0]
    return pid


def _inline_kubeconfig(cluster: ControlPlane) -> str:
    """The cluster's admin kubeconfig with its certificates inline (one file to mount)."""

    def b64(name: str) -> str:
        return base64.b64encode((cluster.workdir / name).read_bytes()).decode()

    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: test\n  cluster:\n    server: {cluster.server}\n"
        f"    certificate-authority-data: {b64('ca.crt')}\n"
        f"users:\n- name: admin\n  user:\n    client-certificate-data: {b64('admin.crt')}\n"
        f"    client-key-data: {b64('admin.key')}\n"
        "contexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\n"
        "current-context: test\n"
    )


@pytest.mark.cluster
def test_operator_image_starts_as_65532(
    built: dict[str, Image], cluster: ControlPlane, tmp_path: Path
) -> None:
    """The operator image's entrypoint, as UID 65532, comes up against a real apiserver.

    Its health endpoint is kopf's and answers only once kopf runs; before the operator
    gave kopf an identity, kopf's getpass.getuser() raised KeyError for UID 65532 first.
    """
    from token_refresher_operator.devcert import write_self_signed

    conf = tmp_path / "conf"
    conf.mkdir()
    write_self_signed(conf)
    (conf / "config.yaml").write_text(
        "defaults:\n  format: raw\nsidecar:\n  image: example.invalid/sidecar:1\n  port: 8099\n"
    )
    (conf / "kubeconfig").write_text(_inline_kubeconfig(cluster))
    conf.chmod(0o755)
    for f in conf.iterdir():
        f.chmod(0o644)  # readable by UID 65532; a throwaway key of a throwaway cluster
    health = free_port()
    env = {
        "KUBECONFIG": "/conf/kubeconfig",
        "TOKEN_REFRESHER_OPERATOR_LISTEN_HOST": "127.0.0.1",
        "TOKEN_REFRESHER_OPERATOR_WEBHOOK_PORT": str(free_port()),
        "TOKEN_REFRESHER_OPERATOR_REPORT_PORT": str(free_port()),
        "TOKEN_REFRESHER_OPERATOR_HEALTH_PORT": str(health),
        "TOKEN_REFRESHER_OPERATOR_TLS_CERT_FILE": "/conf/tls.crt",
        "TOKEN_REFRESHER_OPERATOR_TLS_KEY_FILE": "/conf/tls.key",
        "TOKEN_REFRESHER_OPERATOR_CONFIG_FILE": "/conf/config.yaml",
    }
    entrypoint = image_config(built["operator"])["Entrypoint"]
    assert isinstance(entrypoint, list)
    log_file = tmp_path / "operator.log"
    with container(built["operator"]) as c:
        argv = [
            "buildah",
            "run",
            "--isolation",
            "chroot",
            f"--user={USER}",
            f"--volume={conf}:/conf:ro",
            *(f"--env={k}={v}" for k, v in env.items()),
            c,
            "--",
            *entrypoint,
        ]
        proc = start_process(argv, log_file)
        try:

            def healthy() -> bool:
                assert proc.poll() is None, "operator exited:\n" + log_file.read_text()[-3000:]
                return http_ok(f"http://127.0.0.1:{health}/healthz")

            try:
                wait_until("the operator's /healthz", healthy, 60, every=0.3, note=None)
            except WaitTimeout as exc:
                raise AssertionError(f"{exc}:\n{log_file.read_text()[-3000:]}") from None
            # A graceful stop, as the kubelet does it: SIGTERM to the operator process.
            os.kill(_leaf(proc.pid), signal.SIGTERM)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = log_file.read_text()
    assert "getpwuid" not in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert proc.returncode == 0, text[-3000:]
