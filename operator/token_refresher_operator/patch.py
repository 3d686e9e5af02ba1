"""Annotations -> sidecar -> JSON Patch: the pure heart of the webhook.

`admit` takes a pod as the apiserver sent it and answers, once per admission, why it is
left alone or the RFC 6902 operations that add the token-refresher native sidecar
(`container`), its volumes and the app containers' read-only token mount
(`TOKEN_FILE`, and `TOKEN_FILE_<NAME>` per named token), or AnnotationError to deny it.
No I/O: the webhook hands in the pod and the cluster config, and tests call it directly
and apply the operations with a real JSON Patch library. The sidecar's env is rendered
by `sidecarenv` and checked by the sidecar's own model (`envcheck`) before any
operation is built; the operations are built by hand (append vs add, escaping, index
order) rather than diffed, so one admission builds one patch.
"""

from __future__ import annotations

from typing import Any

from token_refresher_operator.annotations import (
    INJECTED,
    InjectionSpec,
    annotation,
    parse,
    wants_injection,
)
from token_refresher_operator.config import ClusterConfig
from token_refresher_operator.container import secret_mode, sidecar_container, sidecar_volumes
from token_refresher_operator.envcheck import check_env
from token_refresher_operator.errors import AnnotationError
from token_refresher_operator.layout import (
    CREDENTIALS_DIR,
    NEVER_INJECTED_NAMESPACES,
    REPORT_TOKEN_VOLUME,
    SA_TOKEN_VOLUME,
    SECRET_VOLUMES,
    SIDECAR_NAME,
    SIDECAR_UID,
    STATE_FILE,
    STATE_VOLUME,
    TOKEN_VOLUME,
    TOKENS_ENV,
)
from token_refresher_operator.manifests import (
    Container,
    EnvVar,
    JsonPatchOp,
    Pod,
    VolumeMount,
)
from token_refresher_operator.sidecarenv import (
    NO_NAMED,
    NamedMounts,
    named_mounts,
    render_env,
)

__all__ = [
    "CREDENTIALS_DIR",
    "NEVER_INJECTED_NAMESPACES",
    "REPORT_TOKEN_VOLUME",
    "SA_TOKEN_VOLUME",
    "SIDECAR_NAME",
    "SIDECAR_UID",
    "STATE_FILE",
    "STATE_VOLUME",
    "TOKENS_ENV",
    "TOKEN_VOLUME",
    "admit",
    "build_patch",
    "check_env",
    "escape",
    "has_sidecar",
    "render_env",
    "skip_reason",
]


def escape(token: str) -> str:
    """A JSON Pointer reference token (RFC 6901 section 3): `~` -> `~0`, `/` -> `~1`."""
    return token.replace("~", "~0").replace("/", "~1")


def has_sidecar(pod: Pod) -> bool:
    return any(
        c.get("name") == SIDECAR_NAME for c in pod.get("spec", {}).get("initContainers") or []
    )


def skip_reason(*, pod: Pod, namespace: str, operator_namespace: str) -> str | None:
    """Why this pod gets no patch at all, or None when it should be injected."""
    if not wants_injection(pod.get("metadata", {}).get("annotations")):
        return 'not annotated token-refresher.io/inject: "true"'
    if namespace in NEVER_INJECTED_NAMESPACES or namespace == operator_namespace:
        return f"pods in namespace {namespace} are never injected"
    if has_sidecar(pod):
        return f"already has the {SIDECAR_NAME} sidecar"
    return None


def _append(
    ops: list[JsonPatchOp], path: str, existing: list[Any] | None, items: list[Any]
) -> None:
    # RFC 6902 cannot append to an array that is not there: add the whole array instead.
    if existing is None:
        ops.append({"op": "add", "path": path, "value": items})
    else:
        ops.extend({"op": "add", "path": f"{path}/-", "value": item} for item in items)


def _conflicts(
    *, pod: Pod, spec: InjectionSpec, named: NamedMounts, targets: list[tuple[str, int, Container]]
) -> list[str]:
    problems: list[str] = []
    ours = {
        TOKEN_VOLUME,
        STATE_VOLUME,
        SA_TOKEN_VOLUME,
        REPORT_TOKEN_VOLUME,
        *SECRET_VOLUMES.values(),
    }
    if named.volumes:
        ours.update(volume["name"] for volume, _ in named.volumes)
    for volume in pod.get("spec", {}).get("volumes") or []:
        if volume.get("name") in ours:
            problems.append(
                f"spec.volumes: the pod already has a volume named {volume.get('name')}, "
                "which the token-refresher sidecar needs; rename it"
            )
    for container in pod.get("spec", {}).get("containers") or []:
        if container.get("name") == SIDECAR_NAME:
            problems.append(
                f"spec.containers: the name {SIDECAR_NAME} is reserved for the sidecar; "
                "rename the container"
            )
    for _, _, container in targets:
        for mount in container.get("volumeMounts") or []:
            if mount.get("mountPath", "").rstrip("/") == spec.mount_path:
                problems.append(
                    f"{annotation('mount-path')}: container {container.get('name')!r} already "
                    f"mounts a volume at {spec.mount_path}; choose another directory"
                )
    return problems


def admit(
    *,
    pod: Pod,
    namespace: str,
    config: ClusterConfig,
    operator_namespace: str,
    report_audience: str,
) -> str | list[JsonPatchOp]:
    """The one admission decision for a pod: why it is left alone (a sentence), or the
    JSON Patch that injects the sidecar; AnnotationError when it is denied."""
    reason = skip_reason(pod=pod, namespace=namespace, operator_namespace=operator_namespace)
    if reason is not None:
        return reason
    return _injection(pod=pod, config=config, report_audience=report_audience)


def build_patch(
    *,
    pod: Pod,
    namespace: str,
    config: ClusterConfig,
    operator_namespace: str,
    report_audience: str,
) -> list[JsonPatchOp]:
    """The JSON Patch that injects the sidecar, [] when none is due, or AnnotationError."""
    verdict = admit(
        pod=pod,
        namespace=namespace,
        config=config,
        operator_namespace=operator_namespace,
        report_audience=report_audience,
    )
    return [] if isinstance(verdict, str) else verdict


def _injection(*, pod: Pod, config: ClusterConfig, report_audience: str) -> list[JsonPatchOp]:
    pod_spec = pod.get("spec", {})
    containers = pod_spec.get("containers") or []
    init_containers = pod_spec.get("initContainers") or []
    spec = parse(
        annotations=pod.get("metadata", {}).get("annotations"),
        defaults=config.defaults,
        containers=[c.get("name", "") for c in containers],
        init_containers=[c.get("name", "") for c in init_containers],
    )
    mode = secret_mode(pod)
    named = named_mounts(spec, mode=mode) if spec.tokens else NO_NAMED
    env = render_env(spec=spec, config=config, report_audience=report_audience, named=named)
    check_env(env)

    selected = spec.containers
    targets = [
        ("containers", i, c)
        for i, c in enumerate(containers)
        if selected is None or c.get("name") in selected
    ] + [
        ("initContainers", i, c)
        for i, c in enumerate(init_containers)
        if selected is not None and c.get("name") in selected
    ]
    problems = _conflicts(pod=pod, spec=spec, named=named, targets=targets)
    if problems:
        raise AnnotationError(problems)

    volumes = sidecar_volumes(
        spec=spec, config=config, mode=mode, named=named, report_audience=report_audience
    )
    sidecar = sidecar_container(spec=spec, config=config, env=env, volumes=volumes, named=named)
    ops: list[JsonPatchOp] = []

    annotations = pod.get("metadata", {}).get("annotations")
    if annotations is None:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {INJECTED: "true"}})
    else:
        ops.append(
            {"op": "add", "path": f"/metadata/annotations/{escape(INJECTED)}", "value": "true"}
        )

    _append(ops, "/spec/volumes", pod_spec.get("volumes"), list(volumes))

    mount: VolumeMount = {"name": TOKEN_VOLUME, "mountPath": spec.mount_path, "readOnly": True}
    token_env: list[EnvVar] = [{"name": "TOKEN_FILE", "value": spec.token_file}]
    if spec.tokens:
        token_env += (
            {
                "name": f"TOKEN_FILE_{token.name.upper().replace('-', '_')}",
                "value": spec.file_of(token),
            }
            for token in spec.tokens
        )
    for kind, index, container in targets:
        base = f"/spec/{kind}/{index}"
        _append(ops, f"{base}/volumeMounts", container.get("volumeMounts"), [dict(mount)])
        # A TOKEN_FILE(_<NAME>) the author set on purpose wins over ours.
        own = {var.get("name") for var in container.get("env") or []}
        added = [dict(var) for var in token_env if var["name"] not in own]
        if added:
            _append(ops, f"{base}/env", container.get("env"), added)

    # Last, so the init container indices above still point where they did: the sidecar
    # goes first, so that init containers after it can already read the token.
    if pod_spec.get("initContainers") is None:
        ops.append({"op": "add", "path": "/spec/initContainers", "value": [sidecar]})
    else:
        ops.append({"op": "add", "path": "/spec/initContainers/0", "value": sidecar})
    # Every value above is built here for this pod and none is shared between two
    # operations (tests/operator/test_patch.py checks it), so no copy is needed.
    return ops
