"""The operator's configuration: its settings (env) and the cluster config file (YAML).

Two sources, two models. `OperatorSettings` comes from `TOKEN_REFRESHER_OPERATOR_*`
environment variables (ports, TLS files, the namespace it runs in, dev mode), checked
here at the edge, every problem one plain line naming the env var. `ClusterConfig` comes
from CONFIG_FILE (`clusterconfig`, re-exported here, where callers have always found it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
)
from pydantic_settings import SettingsConfigDict

from token_refresher.sources import EnvOrValues
from token_refresher_operator.clusterconfig import (
    ClusterConfig,
    ReportConfig,
    SidecarConfig,
    load_cluster_config,
)
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


class OperatorSettings(EnvOrValues):
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

    @field_validator("namespace")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value) or len(value) > 63:
            raise ValueError("must be a namespace name such as token-refresher")
        return value


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
    try:
        settings = OperatorSettings.from_values(
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
