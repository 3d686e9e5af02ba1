"""Annotations -> sidecar -> JSON Patch: the pure heart of the webhook.

`build_patch` takes a pod as the apiserver sent it and answers with the RFC 6902
operations that add the token-refresher native sidecar, its volumes and the app
containers' read-only token mount, or an empty list when there is nothing to do. No I/O:
the webhook hands in the pod and the cluster config, and tests call it directly.

The env rendered for the sidecar is validated with the sidecar's own settings model
(`token_refresher.settings.Settings.from_env`), and each problem it reports is named by
the annotation that sets the field, so a pod is denied at admission for exactly the
reasons the sidecar would have refused to start, in words about what the user wrote.

Named tokens (`<setting>.<name>` annotations, issue 17) go into the one env var
`TOKEN_REFRESHER_TOKENS` as JSON holding only what each token sets itself: the sidecar's
model does the inheriting from the default token, credentials only at the same IdP. The
operator only adds what needs Kubernetes: their Secrets and service-account tokens,
mounted into the sidecar alone, and `TOKEN_FILE_<NAME>` in the app containers.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from token_refresher.problems import FieldPath, Problem, config_problems, env_field_name
from token_refresher.settings import ClientAuth, Grant, Settings, env_name
from token_refresher_operator.annotations import (
    INJECTED,
    InjectionSpec,
    NamedToken,
    SecretRef,
    annotation,
    parse,
    wants_injection,
)
from token_refresher_operator.config import ClusterConfig
from token_refresher_operator.errors import AnnotationError
from token_refresher_operator.keys import ANNOTATION_OF, FIELD_OF, SECRET_KEYS, TABLE
from token_refresher_operator.manifests import (
    Container,
    EnvVar,
    JsonPatchOp,
    Pod,
    Probe,
    Volume,
    VolumeMount,
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

SIDECAR_NAME = "token-refresher"
SIDECAR_UID = 65532  # "nonroot" in distroless images
TOKEN_VOLUME = "token-refresher-token"
STATE_VOLUME = "token-refresher-state"
SA_TOKEN_VOLUME = "token-refresher-sa-token"
REPORT_TOKEN_VOLUME = "token-refresher-report-token"
TOKENS_ENV = env_name("tokens")  # named tokens, as JSON (docs/CONTRACTS.md)
SECRET_VOLUMES = {key: f"token-refresher-{key}" for key in SECRET_KEYS}
CREDENTIALS_DIR = "/var/run/secrets/token-refresher.io"
STATE_DIR = "/var/lib/token-refresher"
# A rotated refresh token lives here, on a volume only the sidecar mounts: left at the
# sidecar's default (beside OUTPUT) the app containers could read it.
STATE_FILE = f"{STATE_DIR}/refresh-token"
SA_TOKEN_SECONDS = 3600
NEVER_INJECTED_NAMESPACES = frozenset({"kube-system"})

# Values for downward-API env while validating: the real ones exist only on the node.
_PLACEHOLDER = "validating"

# The table's, under the names the tests know them by.
_ANNOTATION_OF = ANNOTATION_OF
_FIELD_OF = FIELD_OF


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


def _needs_sa_token(spec: InjectionSpec) -> bool:
    return (
        spec.grant in (Grant.TOKEN_EXCHANGE, Grant.JWT_BEARER)
        or spec.client_auth is ClientAuth.SERVICE_ACCOUNT
    )


def _secret_file(kind: str) -> str:
    return f"{CREDENTIALS_DIR}/{kind}/{kind}"


def _secret_refs(spec: InjectionSpec) -> dict[str, SecretRef]:
    refs = {kind: spec.ref(kind) for kind in SECRET_KEYS}
    return {kind: ref for kind, ref in refs.items() if ref is not None}


@dataclass
class _Named:
    """What the named tokens add: their settings (JSON), and Secret and service-account
    token volumes with the sidecar's mount directory of each."""

    settings: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    volumes: list[tuple[Volume, str]] = dataclasses.field(default_factory=list)


_NO_NAMED = _Named()  # read only


def _same_idp(spec: InjectionSpec, token: NamedToken) -> bool:
    # As the sidecar decides whether credentials are inherited; it compares the URLs
    # normalised, so where it finds the same IdP and this does not, it inherits anyway.
    own = token.settings
    return own.get("issuer", spec.issuer) == spec.issuer and (
        own.get("token-url", spec.token_url) == spec.token_url
    )


def _named(spec: InjectionSpec, *, mode: int) -> _Named:
    """Named tokens' JSON settings and volumes; secrets shared where the ref is the same."""
    named = _Named()
    # (kind, ref) -> file: the default token's first, so an equal ref reuses its mount.
    files = {(kind, ref): _secret_file(kind) for kind, ref in _secret_refs(spec).items()}
    sa_files: dict[str, str] = {}
    if _needs_sa_token(spec) and spec.service_account_audience:
        sa_files[spec.service_account_audience] = f"{CREDENTIALS_DIR}/serviceaccount/token"
    for index, token in enumerate(spec.tokens, 1):
        own: dict[str, str] = {}
        for key, value in token.settings.items():
            if key in SECRET_VOLUMES:
                ref = token.ref(key)
                assert ref is not None  # checked by annotations.parse
                if (key, ref) not in files:
                    volume = f"token-refresher-{index}-{key}"
                    directory = f"{CREDENTIALS_DIR}/tokens/{token.name}/{key}"
                    named.volumes.append((_secret_volume(volume, key, ref, mode), directory))
                    files[key, ref] = f"{directory}/{key}"
                own[_FIELD_OF[key]] = files[key, ref]
            elif key == "file":
                own["output"] = spec.file_of(token)
            elif key != "service-account-audience":
                own[_FIELD_OF[key]] = value
        audience = _sa_audience(spec, token)
        if audience is not None:
            if audience not in sa_files:
                volume = f"{SA_TOKEN_VOLUME}-{len(sa_files) + 1}"
                directory = f"{CREDENTIALS_DIR}/serviceaccount-{len(sa_files) + 1}"
                named.volumes.append((_projected_token(volume, audience), directory))
                sa_files[audience] = f"{directory}/token"
            own["service_account_token_file"] = sa_files[audience]
        named.settings[token.name] = own
    return named


def _sa_audience(spec: InjectionSpec, token: NamedToken) -> str | None:
    """The audience of the service-account token a named token needs, if it needs one
    the sidecar would not inherit from the default token as rendered."""
    own = token.settings
    same_idp = _same_idp(spec, token)
    grant = Grant(own.get("grant", spec.grant.value))
    auth = own.get("client-auth", spec.client_auth.value if spec.client_auth else None)
    if "client-auth" not in own and not same_idp:
        auth = None  # a credential setting: not inherited from another IdP's token
    if grant not in (Grant.TOKEN_EXCHANGE, Grant.JWT_BEARER) and auth != ClientAuth.SERVICE_ACCOUNT:
        return None
    if "service-account-audience" in own:
        return own["service-account-audience"]
    if same_idp and not _needs_sa_token(spec):
        # The default renders no token file to inherit; the unnamed audience is this
        # token's too, as every other unnamed setting is.
        return spec.service_account_audience
    return None  # inherited from the default, or (another IdP) missing: the sidecar says


def render_env(
    *,
    spec: InjectionSpec,
    config: ClusterConfig,
    report_audience: str,
    named: _Named | None = None,
) -> list[EnvVar]:
    """The sidecar's TOKEN_REFRESHER_* env for this pod."""
    env: list[EnvVar] = []

    def put(field: str, value: str | None) -> None:
        if value is not None:
            env.append({"name": env_name(field), "value": value})

    # Every annotation that sets a sidecar field, in the table's order; the few whose
    # value is a file the operator mounts say where.
    sa_token = _needs_sa_token(spec) and spec.service_account_audience
    for key in TABLE:
        if key.field is None:
            continue
        value = spec.get(key.name)
        if key.secret:
            value = _secret_file(key.name) if value is not None else None
        elif key.name == "service-account-audience":
            value = f"{CREDENTIALS_DIR}/serviceaccount/token" if sa_token else None
        elif key.name == "file":
            value = spec.token_file
        put(key.field, value)
    put("state_file", STATE_FILE)
    if spec.tokens:
        named = named if named is not None else _named(spec, mode=0o444)
        put("tokens", json.dumps(named.settings, separators=(",", ":"), sort_keys=True))
    put("listen", f"0.0.0.0:{config.sidecar.port}")
    for field, path in (
        ("pod_name", "metadata.name"),
        ("pod_namespace", "metadata.namespace"),
        ("pod_uid", "metadata.uid"),
    ):
        env.append({"name": env_name(field), "valueFrom": {"fieldRef": {"fieldPath": path}}})
    if config.report is not None:
        put("report_url", str(config.report.url))
        if config.report.ca_bundle.strip():
            put("report_ca", config.report.ca_bundle)
        put("report_token_file", f"{CREDENTIALS_DIR}/report/token")
        put("report_audience", report_audience)
    return env


def _key_of(path: FieldPath) -> str | None:
    """The annotation key that sets a sidecar settings field (`audience`,
    `audience.payments`), if a pod's author can set it."""
    if path[0] == "tokens":
        if len(path) < 3 or path[2] not in _ANNOTATION_OF:
            return None
        return f"{_ANNOTATION_OF[path[2]]}.{path[1]}"
    return _ANNOTATION_OF.get(path[0])


def _annotation_name(path: FieldPath) -> str:
    """The operator's name of a sidecar settings field: the annotation that sets it,
    else the sidecar's env var name, which only the cluster's configuration sets."""
    if len(path) == 2 and path[0] == "tokens":
        return f"token {path[1]}"
    key = _key_of(path)
    return env_field_name(path) if key is None else annotation(key)


def _annotation_line(problem: Problem) -> str:
    if all(_key_of(field) is None for field in problem.fields()):
        # Nothing the pod's author wrote: the operator rendered something the sidecar
        # refuses, which only the cluster's configuration can fix.
        return f"token-refresher operator configuration: {problem.render(_annotation_name)}"
    return problem.render(_annotation_name)


def check_env(env: list[EnvVar]) -> Settings:
    """Validate rendered env with the sidecar's model; AnnotationError in annotation terms."""
    verdict = _validated(tuple((var["name"], var.get("value", _PLACEHOLDER)) for var in env))
    if isinstance(verdict, tuple):
        raise AnnotationError(list(verdict))
    return verdict


# The pods of one Deployment (one template) render the same env, and validating it with
# pydantic-settings costs ~1.3 ms, most of the webhook's time per pod: remember the
# verdicts of the last few distinct envs. The model reads nothing but the env it is given.
@functools.lru_cache(maxsize=64)
def _validated(flat: tuple[tuple[str, str], ...]) -> Settings | tuple[str, ...]:
    try:
        return Settings.from_env(dict(flat))
    except ValidationError as exc:
        return tuple(_annotation_line(problem) for problem in config_problems(exc))


def _probe(path: str, port: int, *, period: int, failures: int) -> Probe:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 1,
    }


def _secret_mode(pod: Pod) -> int:
    # The sidecar runs as a non-root UID. Secret files are owned by root, so 0400 is
    # readable only through the pod's fsGroup (the kubelet then adds group read); without
    # one, 0444 is what lets the sidecar read them. Either way no other container mounts
    # these volumes, so no other container can read them.
    has_fs_group = "fsGroup" in (pod.get("spec", {}).get("securityContext") or {})
    return 0o400 if has_fs_group else 0o444


def _secret_volume(name: str, kind: str, ref: SecretRef, mode: int) -> Volume:
    return {
        "name": name,
        "secret": {
            "secretName": ref.secret,
            "items": [{"key": ref.key, "path": kind}],
            "defaultMode": mode,
        },
    }


def _volumes(
    *, spec: InjectionSpec, config: ClusterConfig, mode: int, named: _Named, report_audience: str
) -> list[Volume]:
    size = config.sidecar.volume_size_limit
    volumes: list[Volume] = [
        {"name": TOKEN_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": size}},
        {"name": STATE_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": size}},
    ]
    for kind, ref in _secret_refs(spec).items():
        volumes.append(_secret_volume(SECRET_VOLUMES[kind], kind, ref, mode))
    if _needs_sa_token(spec) and spec.service_account_audience:
        volumes.append(_projected_token(SA_TOKEN_VOLUME, spec.service_account_audience))
    if named.volumes:
        volumes.extend(volume for volume, _ in named.volumes)
    if config.report is not None:
        volumes.append(_projected_token(REPORT_TOKEN_VOLUME, report_audience))
    return volumes


def _projected_token(name: str, audience: str) -> Volume:
    return {
        "name": name,
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": audience,
                        "expirationSeconds": SA_TOKEN_SECONDS,
                        "path": "token",
                    }
                }
            ]
        },
    }


def _sidecar(
    *,
    spec: InjectionSpec,
    config: ClusterConfig,
    env: list[EnvVar],
    volumes: list[Volume],
    named: _Named,
) -> Container:
    mounts: list[VolumeMount] = [
        {"name": TOKEN_VOLUME, "mountPath": spec.mount_path},
        {"name": STATE_VOLUME, "mountPath": STATE_DIR},
    ]
    names = {v["name"] for v in volumes}
    for kind in _secret_refs(spec):
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
        # crash-loop waiting for the first one; 60 s covers a slow IdP at pod start.
        "startupProbe": _probe("/readyz", port, period=1, failures=60),
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


def _append(
    ops: list[JsonPatchOp], path: str, existing: list[Any] | None, items: list[Any]
) -> None:
    # RFC 6902 cannot append to an array that is not there: add the whole array instead.
    if existing is None:
        ops.append({"op": "add", "path": path, "value": items})
    else:
        ops.extend({"op": "add", "path": f"{path}/-", "value": item} for item in items)


def _conflicts(
    *, pod: Pod, spec: InjectionSpec, named: _Named, targets: list[tuple[str, int, Container]]
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
    mode = _secret_mode(pod)
    named = _named(spec, mode=mode) if spec.tokens else _NO_NAMED
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

    volumes = _volumes(
        spec=spec, config=config, mode=mode, named=named, report_audience=report_audience
    )
    sidecar = _sidecar(spec=spec, config=config, env=env, volumes=volumes, named=named)
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
