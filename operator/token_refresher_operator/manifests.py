"""Typed shapes of the raw Kubernetes dicts the operator reads and writes.

The webhook receives a pod as plain JSON and answers with a JSON Patch (RFC 6902), so the
pure core works on dicts, not on client-library models: these TypedDicts give those dicts
names and let mypy check the keys. Only the fields the operator touches are declared;
everything else passes through untouched.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

__all__ = [
    "Container",
    "EnvVar",
    "JsonPatchOp",
    "ObjectMeta",
    "Pod",
    "PodSpec",
    "Probe",
    "Volume",
    "VolumeMount",
]


class ObjectMeta(TypedDict, total=False):
    name: str
    generateName: str
    namespace: str
    uid: str
    labels: dict[str, str]
    annotations: dict[str, str]


class FieldRef(TypedDict):
    fieldPath: str


class EnvVarSource(TypedDict, total=False):
    fieldRef: FieldRef


class EnvVar(TypedDict, total=False):
    name: str
    value: str
    valueFrom: EnvVarSource


class VolumeMount(TypedDict, total=False):
    name: str
    mountPath: str
    readOnly: bool
    subPath: str


class HTTPGetAction(TypedDict):
    path: str
    port: int


class Probe(TypedDict, total=False):
    httpGet: HTTPGetAction
    periodSeconds: int
    failureThreshold: int
    timeoutSeconds: int
    initialDelaySeconds: int


class Container(TypedDict, total=False):
    name: str
    image: str
    imagePullPolicy: str
    restartPolicy: Literal["Always"]
    env: list[EnvVar]
    volumeMounts: list[VolumeMount]
    startupProbe: Probe
    readinessProbe: Probe
    livenessProbe: Probe
    resources: dict[str, dict[str, str]]
    securityContext: dict[str, Any]


class Volume(TypedDict, total=False):
    name: str
    emptyDir: dict[str, str]
    secret: dict[str, Any]
    projected: dict[str, Any]


class PodSecurityContext(TypedDict, total=False):
    fsGroup: int
    runAsNonRoot: bool
    runAsUser: int


class PodSpec(TypedDict, total=False):
    containers: list[Container]
    initContainers: list[Container]
    volumes: list[Volume]
    serviceAccountName: str
    securityContext: PodSecurityContext


class Pod(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: PodSpec


class JsonPatchOp(TypedDict):
    """One RFC 6902 operation; the operator only ever emits `add`."""

    op: Literal["add", "replace", "remove", "test"]
    path: str
    value: Any
