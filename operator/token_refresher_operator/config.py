"""The operator's configuration: its settings (env) and the cluster config file (YAML).

Two sources, two models. `OperatorSettings` comes from `TOKEN_REFRESHER_OPERATOR_*`
environment variables (ports, TLS files, the namespace it runs in, dev mode).
`ClusterConfig` comes from CONFIG_FILE, which the chart renders into a ConfigMap: the
cluster-wide annotation defaults, the sidecar image and resources, and where sidecars
report failures. Both are checked here, at the edge, before the operator talks to anyone:
every problem becomes one plain line naming the env var or the file and key.
"""

from __future__ import annotations

import contextvars
import os
import re
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from token_refresher_operator.annotations import PREFIX, token_errors, value_errors
from token_refresher_operator.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "ClusterConfig",
    "OperatorSettings",
    "ReportConfig",
    "SidecarConfig",
    "load_cluster_config",
    "load_settings",
]

ENV_PREFIX = "TOKEN_REFRESHER_OPERATOR_"


def _version() -> str:
    try:
        return metadata.version("token-refresher")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "latest"


DEFAULT_IMAGE = f"ghcr.io/token-refresher/token-refresher:{_version()}"

# Set while load_settings() validates values it has read itself: pydantic-settings must
# then not read the process environment a second time (tests pass their own mapping).
_EXPLICIT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "token_refresher_operator_explicit_settings", default=False
)

# Kubernetes resource.Quantity, e.g. 5m, 32Mi, 1e3, 0.5.
_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?")


class OperatorSettings(BaseSettings):
    """The operator's own settings; see docs/CONTRACTS.md "Operator settings"."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, case_sensitive=False, extra="ignore", frozen=True
    )

    namespace: str = Field(
        "token-refresher", description="The operator's namespace: its pods are never mutated."
    )
    webhook_port: int = Field(8443, ge=1, le=65535, description="HTTPS port of /mutate.")
    report_port: int = Field(8444, ge=1, le=65535, description="HTTPS port of /report.")
    health_port: int = Field(8080, ge=1, le=65535, description="HTTP port of /healthz.")
    listen_host: str = Field("0.0.0.0", description="Bind address of the ports above.")
    tls_cert_file: Path = Field(
        Path("/etc/token-refresher/tls/tls.crt"),
        description="Serving certificate (PEM); reloaded when it changes.",
    )
    tls_key_file: Path = Field(
        Path("/etc/token-refresher/tls/tls.key"),
        description="Key of the serving certificate (PEM); reloaded when it changes.",
    )
    config_file: Path = Field(
        Path("/etc/token-refresher/config/config.yaml"),
        description="Cluster defaults, sidecar image, report endpoint (YAML).",
    )
    dev: bool = Field(
        False,
        description="Local mode: self-signed certificate on 127.0.0.1, and the operator "
        "registers the MutatingWebhookConfiguration token-refresher-dev itself.",
    )
    report_audience: str = Field(
        "token-refresher-report", description="Audience of report tokens (TokenReview)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _EXPLICIT.get():
            return (init_settings,)
        return (init_settings, env_settings)

    @field_validator("namespace")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value) or len(value) > 63:
            raise ValueError("must be a namespace name such as token-refresher")
        return value


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


def load_settings(env: Mapping[str, str] | None = None) -> OperatorSettings:
    """Settings from the environment, or ConfigError with one line per wrong variable.

    With `env`, only that mapping is read (tests); otherwise the process environment.
    """
    source = os.environ if env is None else env
    values = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in source.items()
        if key.upper().startswith(ENV_PREFIX)
    }
    known = set(OperatorSettings.model_fields)
    unknown = sorted(ENV_PREFIX + key.upper() for key in values if key not in known)
    problems = [f"{name}: unknown setting" for name in unknown]
    # Passing the values explicitly (rather than letting pydantic-settings read the
    # environment) keeps the env var names in the messages and makes tests hermetic.
    token = _EXPLICIT.set(True)
    try:
        settings = OperatorSettings.model_validate(
            {key: value for key, value in values.items() if key in known}
        )
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            field = str(err["loc"][0]) if err.get("loc") else ""
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            got = err.get("input")
            suffix = f" (got {got!r})" if isinstance(got, str) else ""
            problems.append(f"{ENV_PREFIX}{field.upper()}: {msg}{suffix}")
        raise ConfigError(problems) from None
    finally:
        _EXPLICIT.reset(token)
    if problems:
        raise ConfigError(problems)
    if not settings.dev:
        for field in ("tls_cert_file", "tls_key_file"):
            path: Path = getattr(settings, field)
            if not path.is_file():
                problems.append(
                    f"{ENV_PREFIX}{field.upper()}: {path} is not a readable file (mount the "
                    "serving certificate there, or set TOKEN_REFRESHER_OPERATOR_DEV=true "
                    "for a self-signed one)"
                )
    if problems:
        raise ConfigError(problems)
    return settings


def load_cluster_config(path: Path) -> ClusterConfig:
    """CONFIG_FILE parsed and checked, or ConfigError with one line per problem."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [f"{ENV_PREFIX}CONFIG_FILE: cannot read {path}: {exc.strerror or exc}"]
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
