"""The sidecar's one settings model, read from `TOKEN_REFRESHER_*` environment variables.

Everything the refresher does is decided here, at the edge, before any network call: a
wrong value becomes a `Problem` (a field and a message, `problems.py`) that the CLI prints
as one line naming the environment variable (`config_errors`), never a traceback. The
operator imports this model too (and nothing else of the daemon: no HTTP client, no
metrics), builds it from the env it renders into the injected container, and names the
same problems by annotation, so the webhook and the sidecar can never disagree about what
a valid configuration is. Credentials are kept as *paths*, never values: the kubelet
rotates projected tokens and users rotate secrets, so the files are re-read when used
(pydantic-settings' secrets_dir would read them once).

One sidecar can serve several tokens (issue 17): the unnamed settings are the `default`
token, and `TOKEN_REFRESHER_TOKENS` adds named ones (`named.py` says what they inherit).
`Settings.all_tokens()` gives each token's effective settings, default first. Whether
the settings combine into a working sidecar is `combinations.py`'s to say. The module is
long because the model is: one field per setting, each with its own check and the
description that --help and the README reference are made from.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    NoDecode,
    SettingsConfigDict,
)

from .boot import DEFAULT_LISTEN
from .combinations import combination_problems
from .kinds import ClientAuth, Grant
from .named import CREDENTIAL_FIELDS, MAX_TOKENS, TOKEN_FIELDS, TOKEN_NAME, named_tokens
from .problems import (
    DEFAULT_TOKEN,
    ENV_PREFIX,
    Problem,
    Problems,
    config_errors,
    config_problems,
    env_name,
    token_env_name,
)
from .sources import EnvOrValues

__all__ = [
    "CREDENTIAL_FIELDS",
    "DEFAULT_TOKEN",
    "ENV_PREFIX",
    "MAX_TOKENS",
    "TOKEN_FIELDS",
    "TOKEN_NAME",
    "ClientAuth",
    "Grant",
    "Problem",
    "Settings",
    "config_errors",
    "config_problems",
    "env_name",
    "token_env_name",
]


class Settings(EnvOrValues):
    """What to fetch, from where, and where to put it. See README "Configuring the sidecar"."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        use_enum_values=False,
    )

    issuer: AnyHttpUrl | None = None
    """OIDC issuer URL; the token endpoint is discovered from it."""
    token_url: AnyHttpUrl | None = None
    """Token endpoint URL (instead of, or overriding, discovery)."""
    grant: Grant = Grant.CLIENT_CREDENTIALS
    """How to get a token."""
    client_id: str | None = None
    """OAuth2 client id."""
    client_secret_file: Path | None = None
    """File holding the client secret; re-read when it changes."""
    client_auth: ClientAuth | None = None
    """How the client authenticates to the token endpoint. Default: client_secret_basic if a
    secret is given, private_key_jwt if a key is given, else none."""
    private_key_file: Path | None = None
    """PEM private key for private_key_jwt client assertions."""
    private_key_alg: str = "RS256"
    """JWS algorithm for private_key_jwt."""
    private_key_id: str | None = None
    """kid in the header of private_key_jwt assertions, naming the key in the client's JWKS.
    Default: the key's RFC 7638 thumbprint (SHA-256, base64url)."""
    service_account_token_file: Path | None = None
    """Projected service-account token (subject token / assertion); re-read on every use."""
    refresh_token_file: Path | None = None
    """Bootstrap refresh token. With GRANT=refresh_token it is the only way in; with another
    grant it is used first, and that grant is the fallback when the IdP rejects the refresh
    token (invalid_grant)."""
    state_file: Path | None = None
    """Where a rotated refresh token is kept (mode 0600) so a restart continues with the
    newest one. Default: .<output name>.state beside OUTPUT."""
    family_secret: str | None = None
    """Name of a Secret in the pod's namespace that holds the refresh-token family shared by
    every pod started from the same bootstrap token (usually the bootstrap Secret itself):
    one pod at a time presents the refresh token, the others take its access token. Needs
    get, watch and patch on that Secret. Unset: this pod keeps its refresh token to itself,
    in STATE_FILE."""
    family_lease: float = Field(30.0, gt=0)
    """Seconds a holder's claim on the family lasts while it presents the refresh token, and
    beyond its planned refresh; another pod takes over only after the holder has been silent
    this long."""
    kubernetes_api: AnyHttpUrl | None = None
    """kube-apiserver URL for FAMILY_SECRET. Default:
    https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, as in every pod."""
    kubernetes_token_file: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    """Service-account token for FAMILY_SECRET; re-read on every request."""
    kubernetes_ca_file: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
    """CA bundle of the kube-apiserver for FAMILY_SECRET."""
    scope: str | None = None
    """Space-separated scopes to request."""
    audience: str | None = None
    """audience request parameter."""
    resource: str | None = None
    """resource request parameter (RFC 8707)."""
    requested_token_type: str | None = None
    """Token exchange: requested_token_type (RFC 8693 section 2.1)."""
    subject_token_type: str = "urn:ietf:params:oauth:token-type:jwt"
    """Token exchange: subject_token_type of the service-account token (Dex wants
    urn:ietf:params:oauth:token-type:id_token)."""
    token_params: str | None = None
    """Extra form parameters for every token request, URL-encoded (e.g.
    connector_id=kubernetes for Dex's token exchange)."""
    output: Path = Path("/var/run/secrets/token-refresher/token")
    """Path of the token file."""
    format: Literal["raw", "json"] = "raw"
    """raw: the token alone; json: token, type, expiry, scope."""
    file_mode: int = 0o444
    """Mode of the token file (octal, e.g. 0440). 0444 lets app containers under any UID
    read it; the volume is only mounted into this pod."""
    refresh_ratio: float = Field(0.7, gt=0, lt=1)
    """Refresh when this fraction of the lifetime has passed."""
    jitter: float = Field(0.1, ge=0, lt=0.5)
    """± fraction of the lifetime added at random."""
    # 1 s, not more: the floor wins over expiry, so a floor near the lifetime of short
    # tokens (5 s ones exist) would refresh them only as they expire.
    min_refresh_interval: float = Field(1.0, ge=0)
    """Floor in seconds between refreshes, so a token of a second or less cannot make a
    tight loop."""
    default_lifetime: float = Field(300.0, gt=0)
    """Lifetime in seconds assumed when the response has neither expires_in nor a JWT exp."""
    on_expiry: Literal["remove", "keep"] = "remove"
    """remove the file when the token expired with no successful refresh, or keep it."""
    ca_file: Path | None = None
    """CA bundle for the IdP (default: system)."""
    timeout: float = Field(10.0, gt=0)
    """Timeout in seconds of one IdP request."""
    backoff_initial: float = Field(1.0, gt=0)
    """First retry delay in seconds after a transient failure."""
    backoff_max: float = Field(60.0, gt=0)
    """Cap in seconds of the exponential backoff."""
    permanent_error_interval: float = Field(300.0, gt=0)
    """Ceiling in seconds of the retry delay after a permanent error (invalid_client,
    invalid_grant with no fallback): retried at growing intervals from a few seconds up to
    this, and at once when a credential file changes."""
    listen: str = DEFAULT_LISTEN
    """host:port of /healthz, /readyz, /metrics, /status."""
    report_url: AnyHttpUrl | None = None
    """Operator endpoint that turns failures into pod Events."""
    report_token_file: Path | None = None
    """Projected token sent as the report's bearer credential."""
    report_ca_file: Path | None = None
    """CA bundle file for REPORT_URL."""
    report_ca: str | None = None
    """CA bundle for REPORT_URL as PEM text (public; set by injection, since a pod cannot
    mount a ConfigMap from the operator's namespace)."""
    report_audience: str = "token-refresher-report"
    """Audience of the projected token that authenticates reports."""
    pod_namespace: str | None = None
    """Namespace of this pod (for reports)."""
    pod_name: str | None = None
    """Name of this pod (for reports)."""
    pod_uid: str | None = None
    """UID of this pod (for reports)."""
    log_format: Literal["json", "text"] = "json"
    """Log line format."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level."""
    # NoDecode: the JSON is parsed by `_tokens_json`, so a typo is a config error line
    # naming TOKEN_REFRESHER_TOKENS rather than a SettingsError traceback from the source.
    tokens: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict)
    """More tokens, each written to its own file: a JSON object {name: {setting: value}},
    e.g. {"payments": {"audience": "payments-api"}}. A name is a DNS label other than
    'default'; at most 7 (8 tokens with the default one). A named token inherits every
    setting it does not set, its credentials only when it uses the same ISSUER and
    TOKEN_URL; OUTPUT defaults to <OUTPUT's directory>/<name>, STATE_FILE to
    <STATE_FILE>.<name>."""

    tokens_file: Path | None = None
    """A JSON file holding what TOKENS holds (for a sidecar run by itself: a ConfigMap
    mounted as a file keeps a long list readable); read once at start, not together with
    TOKENS."""

    # Each named token's effective settings, in the order written (`named.named_tokens`).
    _named: dict[str, Settings] = PrivateAttr(default_factory=dict)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("file_mode", mode="before")
    @classmethod
    def _octal(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return int(value, 8)
            except ValueError:
                raise ValueError("must be an octal file mode such as 0444 or 0440") from None
        return value

    @field_validator("token_params")
    @classmethod
    def _form(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import parse_qsl

        try:
            pairs = parse_qsl(value, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise ValueError("must be URL-encoded name=value pairs joined by &") from None
        reserved = {
            "grant_type",
            "client_secret",
            "client_assertion",
            "refresh_token",
            "subject_token",
            "assertion",
        } & {k for k, _ in pairs}
        if reserved:
            raise ValueError(
                f"must not set {', '.join(sorted(reserved))}: the grant and client "
                "authentication set those"
            )
        return value

    @field_validator("family_secret")
    @classmethod
    def _secret_name(cls, value: str | None) -> str | None:
        # RFC 1123 subdomain: what the apiserver accepts as a Secret's name.
        if value is not None and not re.fullmatch(
            r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", value
        ):
            raise ValueError("must be the name of a Secret (lower case, digits, '-' and '.')")
        if value is not None and len(value) > 253:
            raise ValueError("must be the name of a Secret (at most 253 characters)")
        return value

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(
                    f"must be a JSON object {{name: {{setting: value}}}}: {exc}"
                ) from None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object {name: {setting: value}}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _tokens_from_file(cls, data: Any) -> Any:
        # Before field validation: what the file holds then goes through the checks of
        # TOKENS (`_tokens_json`, `named_tokens`) as if it had been TOKENS itself.
        if not isinstance(data, dict) or data.get("tokens_file") in (None, ""):
            return data
        if data.get("tokens") not in (None, "", {}):
            raise Problems([Problem(("tokens_file",), "set this or {0}, not both", (("tokens",),))])
        path = Path(data["tokens_file"])
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise Problems([Problem(("tokens_file",), f"cannot read {path}: {reason}")]) from None
        try:
            tokens = json.loads(text)
        except ValueError as exc:
            raise Problems(
                [Problem(("tokens_file",), f"{path} must hold a JSON object: {exc}")]
            ) from None
        return {**data, "tokens": tokens}

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be host:port, for example 0.0.0.0:8099")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        problems = combination_problems(self)
        if problems:
            raise Problems(problems)
        # Named tokens are checked only once the default is right: they inherit from it,
        # so a mistake of the default's would come back once per token, under their names.
        self._named, problems = named_tokens(self)
        if problems:
            raise Problems(problems)
        return self

    @property
    def effective_client_auth(self) -> ClientAuth:
        if self.client_auth is not None:
            return self.client_auth
        if self.client_secret_file is not None:
            return ClientAuth.CLIENT_SECRET_BASIC
        if self.private_key_file is not None:
            return ClientAuth.PRIVATE_KEY_JWT
        return ClientAuth.NONE

    @property
    def effective_state_file(self) -> Path:
        if self.state_file is not None:
            return self.state_file
        return self.output.with_name(f".{self.output.name}.state")

    def all_tokens(self) -> dict[str, Settings]:
        """Every token's effective settings by name: `default` (these settings) first,
        then the named tokens of TOKEN_REFRESHER_TOKENS in the order written."""
        return {DEFAULT_TOKEN: self, **self._named}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from `TOKEN_REFRESHER_*` variables: of `env` when given (the operator
        passes the env it renders, so its own environment never leaks in), else of the
        process environment."""
        if env is None:
            return cls()
        return cls.from_values(_fields_of(env))

    @classmethod
    def describe(cls) -> Iterator[tuple[str, str, str]]:
        """(env var, default, description) for every setting: feeds --help and the docs."""
        descriptions = _docstrings(cls)
        for name, field in cls.model_fields.items():
            default = field.default
            if default is None:
                shown = "-"
            elif name == "file_mode":
                shown = f"0{default:o}"
            elif field.default_factory is not None:
                shown = "-"
            elif isinstance(default, StrEnum):
                shown = default.value
            else:
                shown = str(default)
            yield env_name(name), shown, descriptions.get(name, "")


def _docstrings(model: type[Settings]) -> dict[str, str]:
    """Each field's docstring, from the class's source, on one line.

    Read only when asked (--help, the docs), not as pydantic's `use_attribute_docstrings`
    would, at every import: that parses this class's source at each sidecar start (about
    0.2 MiB and 15 ms, measured for issue 15) for text the daemon never shows.
    """
    import ast  # here, not at the top: the daemon never needs them
    import inspect

    [cls] = ast.parse(inspect.getsource(model)).body
    assert isinstance(cls, ast.ClassDef)
    found: dict[str, str] = {}
    for field, doc in itertools.pairwise(cls.body):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(doc, ast.Expr)
            and isinstance(doc.value, ast.Constant)
            and isinstance(doc.value.value, str)
        ):
            found[field.target.id] = " ".join(doc.value.value.split())
    return found


def _fields_of(env: Mapping[str, str]) -> dict[str, str]:
    """The settings fields an env mapping sets, as pydantic-settings reads
    `os.environ`: names case-insensitive, unknown ones ignored, the last of two spellings
    of one name winning."""
    prefix = ENV_PREFIX.lower()
    fields: dict[str, str] = {}
    for name, value in env.items():
        lowered = name.lower()
        if lowered.startswith(prefix) and lowered[len(prefix) :] in Settings.model_fields:
            fields[lowered[len(prefix) :]] = value
    return fields
