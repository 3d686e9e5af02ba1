"""The cluster config file (CONFIG_FILE, YAML): what the operator injects, cluster-wide.

The chart renders it into a ConfigMap: the cluster-wide annotation defaults (checked by
the same rules as a pod's annotations, `keys.TABLE`), the sidecar image and resources,
and where sidecars report failures. `load_cluster_config` checks it at the edge, before
the operator talks to anyone: every problem becomes one plain line naming the file and
the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError, field_validator

from token_refresher_operator.annotations import PREFIX, token_errors, value_errors
from token_refresher_operator.errors import ConfigError

__all__ = [
    "DEFAULT_IMAGE",
    "ClusterConfig",
    "ReportConfig",
    "SidecarConfig",
    "load_cluster_config",
]

_CONFIG_FILE_ENV = "TOKEN_REFRESHER_OPERATOR_CONFIG_FILE"


def _version() -> str:
    try:
        return metadata.version("token-refresher")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "latest"


DEFAULT_IMAGE = f"ghcr.io/token-refresher/token-refresher:{_version()}"

# Kubernetes resource.Quantity, e.g. 5m, 32Mi, 1e3, 0.5.
_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?")


def _quantity(value: Any) -> str:
    text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _QUANTITY.fullmatch(text):
        raise ValueError(f"must be a Kubernetes quantity such as 32Mi or 5m (got {value!r})")
    return text


_ResourceKind = Literal["requests", "limits"]


def _default_resources() -> dict[_ResourceKind, dict[str, str]]:
    return {"requests": {"cpu": "5m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}


class SidecarConfig(BaseModel):
    """How the injected container looks."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    image: str = Field(DEFAULT_IMAGE, min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", alias="imagePullPolicy"
    )
    resources: dict[_ResourceKind, dict[str, str]] = Field(
        default_factory=_default_resources,
        description="requests and limits of the sidecar container.",
    )
    volume_size_limit: str = Field("1Mi", alias="volumeSizeLimit")
    port: int = Field(8099, ge=1, le=65535)

    @field_validator("resources", mode="before")
    @classmethod
    def _resources(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        return {
            kind: (
                {name: _quantity(q) for name, q in amounts.items()}
                if isinstance(amounts, Mapping)
                else amounts
            )
            for kind, amounts in value.items()
        }

    @field_validator("volume_size_limit", mode="before")
    @classmethod
    def _size(cls, value: Any) -> str:
        return _quantity(value)


class ReportConfig(BaseModel):
    """Where injected sidecars report refresh failures; absent: they do not report."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    url: AnyHttpUrl
    ca_bundle: str = Field("", alias="caBundle")

    @field_validator("ca_bundle")
    @classmethod
    def _pem(cls, value: str) -> str:
        if value.strip() and "-----BEGIN CERTIFICATE-----" not in value:
            raise ValueError("must be PEM text (-----BEGIN CERTIFICATE-----...) or empty")
        return value


class ClusterConfig(BaseModel):
    """CONFIG_FILE: see docs/CONTRACTS.md."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    defaults: dict[str, str] = Field(default_factory=dict)
    sidecar: SidecarConfig = Field(default_factory=SidecarConfig)
    report: ReportConfig | None = None
    # The namespaces the chart's webhook configuration leaves out, so the safety net can
    # say why an annotated pod there has no sidecar (safetynet.py).
    excluded_namespaces: list[str] = Field(default_factory=list, alias="excludedNamespaces")

    @field_validator("defaults", mode="before")
    @classmethod
    def _defaults(cls, value: Any) -> Any:
        # YAML reads `refresh-ratio: 0.5` as a float and `format: json` as a string;
        # annotations are always strings, so defaults are too.
        if not isinstance(value, Mapping):
            return value
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key).removeprefix(PREFIX)
            if isinstance(item, bool):
                out[name] = "true" if item else "false"
            elif isinstance(item, int | float):
                out[name] = str(item)
            else:
                out[name] = item
        return out

    @field_validator("defaults")
    @classmethod
    def _default_values(cls, value: dict[str, str]) -> dict[str, str]:
        problems = value_errors(value, name=lambda key: f"defaults.{key}")
        # Named keys (`audience.payments`) give every injected pod that token.
        problems += token_errors(value, name=lambda key: f"defaults.{key}")
        if problems:
            raise ValueError("\n".join(problems))
        return value


def _lines(exc: ValidationError, *, where: str) -> list[str]:
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        loc = ".".join(str(part) for part in err.get("loc", ()))
        if msg.startswith("defaults."):  # the lines of ClusterConfig._default_values
            lines.extend(f"{where}: {line}" for line in msg.splitlines())
            continue
        got = err.get("input")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key"
        elif isinstance(got, str | int | float) and "(got" not in msg:
            msg = f"{msg} (got {got!r})"
        lines.append(f"{where}: {loc}: {msg}" if loc else f"{where}: {msg}")
    return lines


def load_cluster_config(path: Path) -> ClusterConfig:
    """CONFIG_FILE parsed and checked, or ConfigError with one line per problem."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [f"{_CONFIG_FILE_ENV}: cannot read {path}: {exc.strerror or exc}"]
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError([f"{where}: not valid YAML{at}: {problem}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{where}: must be a mapping with defaults, sidecar and report keys"])
    try:
        return ClusterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_lines(exc, where=where)) from None
