"""The injected sidecar container and the volumes only it mounts.

Hardened as the chart's own pods (non-root, read-only root filesystem, no
capabilities, RuntimeDefault seccomp), a native sidecar (an init container with
restartPolicy Always) so it runs before and after the app, probed on its /healthz and
/readyz, with the credentials of every token in volumes that no app container mounts.
`patch` places it in the pod.
"""

from __future__ import annotations

from token_refresher_operator.annotations import (
    InjectionSpec,
)
from token_refresher_operator.config import ClusterConfig
from token_refresher_operator.layout import (
    CREDENTIALS_DIR,
    REPORT_TOKEN_VOLUME,
    SA_TOKEN_VOLUME,
    SECRET_VOLUMES,
    SIDECAR_NAME,
    SIDECAR_UID,
    STATE_DIR,
    STATE_VOLUME,
    TOKEN_VOLUME,
)
from token_refresher_operator.manifests import (
    Container,
    EnvVar,
    Pod,
    Probe,
    Volume,
    VolumeMount,
)
from token_refresher_operator.sidecarenv import (
    NamedMounts,
    needs_sa_token,
    projected_token,
    secret_refs,
    secret_volume,
)

__all__ = ["secret_mode", "sidecar_container", "sidecar_volumes"]


def _probe(path: str, port: int, *, period: int, failures: int, timeout: int = 1) -> Probe:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


# The startup probe asks the sidecar to answer once the first token is on disk, waiting
# up to this long: the app starts the moment its token is there, not at the next probe,
# and the first second's "not yet" is no Warning Event. Fifteen such probes give a slow
# IdP about a minute before the kubelet restarts the sidecar.
STARTUP_WAIT = 4


def secret_mode(pod: Pod) -> int:
    # The sidecar runs as a non-root UID. Secret files are owned by root, so 0400 is
    # readable only through the pod's fsGroup (the kubelet then adds group read); without
    # one, 0444 is what lets the sidecar read them. Either way no other container mounts
    # these volumes, so no other container can read them.
    has_fs_group = "fsGroup" in (pod.get("spec", {}).get("securityContext") or {})
    return 0o400 if has_fs_group else 0o444


def sidecar_volumes(
    *,
    spec: InjectionSpec,
    config: ClusterConfig,
    mode: int,
    named: NamedMounts,
    report_audience: str,
) -> list[Volume]:
    size = config.sidecar.volume_size_limit
    volumes: list[Volume] = [
        {"name": TOKEN_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": size}},
        {"name": STATE_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": size}},
    ]
    for kind, ref in secret_refs(spec).items():
        volumes.append(secret_volume(SECRET_VOLUMES[kind], kind, ref, mode))
    if needs_sa_token(spec) and spec.service_account_audience:
        volumes.append(projected_token(SA_TOKEN_VOLUME, spec.service_account_audience))
    if named.volumes:
        volumes.extend(volume for volume, _ in named.volumes)
    if config.report is not None:
        volumes.append(projected_token(REPORT_TOKEN_VOLUME, report_audience))
    return volumes


def sidecar_container(
    *,
    spec: InjectionSpec,
    config: ClusterConfig,
    env: list[EnvVar],
    volumes: list[Volume],
    named: NamedMounts,
) -> Container:
    mounts: list[VolumeMount] = [
        {"name": TOKEN_VOLUME, "mountPath": spec.mount_path},
        {"name": STATE_VOLUME, "mountPath": STATE_DIR},
    ]
    names = {v["name"] for v in volumes}
    for kind in secret_refs(spec):
        mounts.append(
            {
                "name": SECRET_VOLUMES[kind],
                "mountPath": f"{CREDENTIALS_DIR}/{kind}",
                "readOnly": True,
            }
        )
    if SA_TOKEN_VOLUME in names:
        mounts.append(
            {
                "name": SA_TOKEN_VOLUME,
                "mountPath": f"{CREDENTIALS_DIR}/serviceaccount",
                "readOnly": True,
            }
        )
    for volume, directory in named.volumes:
        mounts.append({"name": volume["name"], "mountPath": directory, "readOnly": True})
    if REPORT_TOKEN_VOLUME in names:
        mounts.append(
            {
                "name": REPORT_TOKEN_VOLUME,
                "mountPath": f"{CREDENTIALS_DIR}/report",
                "readOnly": True,
            }
        )
    port = config.sidecar.port
    return {
        "name": SIDECAR_NAME,
        "image": config.sidecar.image,
        "imagePullPolicy": config.sidecar.image_pull_policy,
        # A native sidecar (KEP-753): started before the app containers, kept running
        # beside them, and not waited for when a Job's containers finish.
        "restartPolicy": "Always",
        "env": env,
        "volumeMounts": mounts,
        # The app containers start only once a valid token is on disk, so they never
        # crash-loop waiting for the first one.
        "startupProbe": _probe(
            f"/readyz?wait={STARTUP_WAIT}",
            port,
            period=1,
            failures=15,
            timeout=STARTUP_WAIT + 1,
        ),
        "readinessProbe": _probe("/readyz", port, period=10, failures=3),
        "livenessProbe": _probe("/healthz", port, period=10, failures=3),
        "resources": {kind: dict(amounts) for kind, amounts in config.sidecar.resources.items()},
        # Pod Security Standards "restricted", whatever the pod itself declares.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SIDECAR_UID,
            "runAsGroup": SIDECAR_UID,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
