"""Run the injected sidecar of a stored pod as a local process, exactly as the kubelet would.

There is no kubelet here, so this plays its part for one container: it takes the
`token-refresher` initContainer the webhook injected into a real pod, resolves its env
(downward API included), materialises its volumes in a temp dir (emptyDirs as folders,
Secret volumes from the real Secrets, projected service-account tokens minted with a real
pod-bound TokenRequest), rewrites mount paths to those folders and starts the console
script with that env. Two things are remapped and nothing else: volume paths, and the
listen address (127.0.0.1 and a free port, since tests never listen on all interfaces).
The demo and the injection tests both use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.controlplane import ControlPlane, free_port

__all__ = ["SIDECAR_NAME", "SidecarRun", "find_sidecar", "prepare_sidecar"]

SIDECAR_NAME = "token-refresher"


def find_sidecar(pod: dict[str, Any]) -> dict[str, Any]:
    for container in pod["spec"].get("initContainers") or []:
        if container["name"] == SIDECAR_NAME:
            return dict(container)
    raise AssertionError(f"pod {pod['metadata']['name']} has no {SIDECAR_NAME} initContainer")


@dataclass
class SidecarRun:
    """A prepared sidecar: its env and argv, and where its volumes live locally."""

    argv: list[str]
    env: dict[str, str]
    volumes: dict[str, Path]  # volume name -> local folder
    mounts: dict[str, Path]  # mount path in the container -> local folder
    port: int

    def local(self, container_path: str) -> Path:
        """Map a path inside the container to the local file that stands for it."""
        for mount, folder in sorted(self.mounts.items(), key=lambda kv: -len(kv[0])):
            if container_path == mount or container_path.startswith(mount.rstrip("/") + "/"):
                return folder / container_path[len(mount) :].lstrip("/")
        raise KeyError(container_path)

    def start(self, **popen: Any) -> subprocess.Popen[Any]:
        popen.setdefault("start_new_session", True)
        return subprocess.Popen(self.argv, env=self.env, **popen)

    def run(self, *extra: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.argv, *extra],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _field_ref(pod: dict[str, Any], path: str) -> str:
    meta = pod["metadata"]
    spec = pod["spec"]
    known = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "spec.nodeName": spec.get("nodeName", ""),
    }
    if path not in known or known[path] is None:
        raise AssertionError(f"downward API field {path} is not supported by the pod runner")
    return str(known[path])


def _materialise(
    cluster: ControlPlane, pod: dict[str, Any], volume: dict[str, Any], folder: Path
) -> None:
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    folder.mkdir(parents=True, exist_ok=True)
    if "emptyDir" in volume:
        return
    if "secret" in volume:
        src = volume["secret"]
        secret = json.loads(
            cluster.kubectl("-n", ns, "get", "secret", src["secretName"], "-o", "json").stdout
        )
        import base64

        items = src.get("items") or [{"key": k, "path": k} for k in secret.get("data", {})]
        for item in items:
            target = folder / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(base64.b64decode(secret["data"][item["key"]]))
            target.chmod(item.get("mode", src.get("defaultMode", 0o644)) & 0o777 | 0o600)
        return
    if "projected" in volume:
        for source in volume["projected"]["sources"]:
            if "configMap" in source:
                _config_map(cluster, ns, source["configMap"], folder)
                continue
            if "downwardAPI" in source:
                for item in source["downwardAPI"].get("items", []):
                    value = _field_ref(pod, item["fieldRef"]["fieldPath"])
                    (folder / item["path"]).write_text(value)
                continue
            sat = source.get("serviceAccountToken")
            if sat is None:
                raise AssertionError(f"projected source {source} is not supported")
            args = [
                "-n", ns, "create", "token", pod["spec"]["serviceAccountName"],
                f"--duration={sat.get('expirationSeconds', 3600)}s",
                "--bound-object-kind=Pod", f"--bound-object-name={name}",
                f"--bound-object-uid={pod['metadata']['uid']}",
            ]  # fmt: skip
            if sat.get("audience"):
                args.append(f"--audience={sat['audience']}")
            (folder / sat["path"]).write_text(cluster.kubectl(*args).stdout.strip())
        return
    raise AssertionError(f"volume {volume['name']} of an unsupported kind")


def _config_map(cluster: ControlPlane, ns: str, src: dict[str, Any], folder: Path) -> None:
    got = cluster.kubectl("-n", ns, "get", "configmap", src["name"], "-o", "json", check=False)
    if got.returncode != 0:
        # kube-root-ca.crt is published by the controller-manager, which does not run here;
        # the sidecar never talks to the apiserver, so its absence changes nothing.
        return
    data = json.loads(got.stdout).get("data", {})
    for item in src.get("items") or [{"key": k, "path": k} for k in data]:
        (folder / item["path"]).write_text(data[item["key"]])


def prepare_sidecar(
    cluster: ControlPlane,
    pod: dict[str, Any],
    workdir: Path,
    *,
    extra_env: dict[str, str] | None = None,
) -> SidecarRun:
    """Materialise the sidecar of a stored pod under workdir; see the module docstring."""
    container = find_sidecar(pod)
    by_name = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    volumes: dict[str, Path] = {}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        vname = mount["name"]
        if vname not in volumes:
            volumes[vname] = workdir / "volumes" / vname
            _materialise(cluster, pod, by_name[vname], volumes[vname])
        local = volumes[vname] / mount.get("subPath", "")
        mounts[mount["mountPath"]] = local
    run = SidecarRun(argv=[], env={}, volumes=volumes, mounts=mounts, port=free_port())

    env: dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var:
            value = str(var["value"])
        elif "fieldRef" in (var.get("valueFrom") or {}):
            value = _field_ref(pod, var["valueFrom"]["fieldRef"]["fieldPath"])
        else:
            raise AssertionError(f"env {var['name']}: only value and fieldRef are supported")
        # Paths inside the container become the local folders that stand for them.
        if value.startswith("/"):
            with contextlib.suppress(KeyError):
                value = str(run.local(value))
        env[var["name"]] = value
    env["TOKEN_REFRESHER_LISTEN"] = f"127.0.0.1:{run.port}"
    # The test's own TOKEN_REFRESHER_* settings must not leak in; the run marker must (the
    # leak guard in conftest finds processes by it).
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TOKEN_REFRESHER_") or k == "TOKEN_REFRESHER_TEST_RUN"
    }
    base.pop("KUBECONFIG", None)  # the sidecar never talks to the apiserver
    run.env = {**base, **env, **(extra_env or {})}
    script = Path(sys.executable).with_name("token-refresher")
    run.argv = [str(script), *(container.get("command") or [])[1:], *(container.get("args") or [])]
    return run
