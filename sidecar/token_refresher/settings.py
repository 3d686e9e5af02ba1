"""The sidecar's one settings model, read from `TOKEN_REFRESHER_*` environment variables.

Everything the refresher does is decided here, at the edge, before any network call: a
wrong value becomes one plain line naming the environment variable and what is allowed
(`config_errors`), never a traceback. The operator imports this model too, and builds it
from the env it renders into the injected container, so the webhook and the sidecar can
never disagree about what a valid configuration is. Credentials are kept as *paths*,
never values: the kubelet rotates projected tokens and users rotate secrets, so the files
are re-read when used (pydantic-settings' secrets_dir would read them once).

One sidecar can serve several tokens (issue 17): the unnamed settings are the `default`
token, and `TOKEN_REFRESHER_TOKENS`, a JSON object `{name: {setting: value}}`, adds named
ones that inherit every setting they do not override — credentials only from a default
that talks to the same IdP, so a secret never reaches an IdP it was not made for.
`Settings.all_tokens()` gives each token's effective settings, default first; a bad named
token fails validation with lines naming `TOKEN_REFRESHER_TOKENS__<NAME>__<FIELD>`.
"""

from __future__ import annotations

import contextvars
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

__all__ = [
    "CREDENTIAL_FIELDS",
    "DEFAULT_TOKEN",
    "ENV_PREFIX",
    "MAX_TOKENS",
    "TOKEN_FIELDS",
    "TOKEN_NAME",
    "ClientAuth",
    "Grant",
    "Settings",
    "config_errors",
    "env_name",
    "token_env_name",
]

ENV_PREFIX = "TOKEN_REFRESHER_"

# Named tokens (issue 17). The name is a DNS-1123 label: it becomes a file name, a
# metrics label and, upper-cased, part of an env var name (TOKEN_FILE_<NAME>).
TOKEN_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DEFAULT_TOKEN = "default"  # the unnamed token, in labels, /status, reports and logs
MAX_TOKENS = 8  # per sidecar, the default one included
# What a named token may set; the rest (listen, log_*, report_*, pod_*, kubernetes_*)
# belongs to the whole process.
TOKEN_FIELDS = frozenset(
    {
        "issuer",
        "token_url",
        "grant",
        "client_id",
        "client_secret_file",
        "client_auth",
        "private_key_file",
        "private_key_alg",
        "private_key_id",
        "service_account_token_file",
        "refresh_token_file",
        "state_file",
        "family_secret",
        "family_lease",
        "scope",
        "audience",
        "resource",
        "requested_token_type",
        "subject_token_type",
        "token_params",
        "output",
        "format",
        "file_mode",
        "refresh_ratio",
        "jitter",
        "min_refresh_interval",
        "default_lifetime",
        "on_expiry",
        "ca_file",
        "timeout",
        "backoff_initial",
        "backoff_max",
        "permanent_error_interval",
    }
)
# Inherited from the default token only by a token that talks to the same IdP (same
# effective issuer and token_url): a secret made for one IdP is never sent to another.
CREDENTIAL_FIELDS = frozenset(
    {
        "client_id",
        "client_auth",
        "client_secret_file",
        "private_key_file",
        "private_key_id",
        "refresh_token_file",
        "family_secret",
        "service_account_token_file",
    }
)
# Never inherited, even at the same IdP: a refresh token can be presented by one token
# only. Two tokens presenting one rotating refresh token would each replay the one the
# other had rotated away, and IdPs with reuse detection revoke the whole family for it.
_OWN_FIELDS = frozenset({"refresh_token_file", "family_secret"})
_TOKENS_ENV = ENV_PREFIX + "TOKENS"


class Grant(StrEnum):
    CLIENT_CREDENTIALS = "client_credentials"
    REFRESH_TOKEN = "refresh_token"
    TOKEN_EXCHANGE = "token_exchange"  # RFC 8693
    JWT_BEARER = "jwt_bearer"  # RFC 7523 section 2.1


class ClientAuth(StrEnum):
    CLIENT_SECRET_BASIC = "client_secret_basic"
    CLIENT_SECRET_POST = "client_secret_post"
    PRIVATE_KEY_JWT = "private_key_jwt"
    SERVICE_ACCOUNT = "service_account"  # projected token as RFC 7523 client assertion
    NONE = "none"


# Set only inside Settings.from_env(): lets the operator validate a rendered env without
# touching (or being polluted by) its own process environment.
_SCOPED_ENV: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "token_refresher_scoped_env", default=None
)


class _MappingEnvSource(EnvSettingsSource):
    """EnvSettingsSource over a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._mapping = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._mapping, False, False, None)


def env_name(field: str) -> str:
    """The environment variable that sets a settings field."""
    return ENV_PREFIX + field.upper()


def token_env_name(token: str, field: str | None = None) -> str:
    """How error lines name a setting of a named token (or the token itself), e.g.
    `TOKEN_REFRESHER_TOKENS__PAYMENTS__AUDIENCE`; for the default token, `env_name`."""
    if token == DEFAULT_TOKEN and field is not None:
        return env_name(field)
    name = f"{_TOKENS_ENV}__{token.upper()}"
    return name if field is None else f"{name}__{field.upper()}"


class Settings(BaseSettings):
    """What to fetch, from where, and where to put it. See README "Configuring the sidecar"."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        use_enum_values=False,
    )

    issuer: AnyHttpUrl | None = Field(
        None, description="OIDC issuer URL; the token endpoint is discovered from it."
    )
    token_url: AnyHttpUrl | None = Field(
        None, description="Token endpoint URL (instead of, or overriding, discovery)."
    )
    grant: Grant = Field(Grant.CLIENT_CREDENTIALS, description="How to get a token.")
    client_id: str | None = Field(None, description="OAuth2 client id.")
    client_secret_file: Path | None = Field(
        None, description="File holding the client secret; re-read when it changes."
    )
    client_auth: ClientAuth | None = Field(
        None,
        description="How the client authenticates to the token endpoint. Default: "
        "client_secret_basic if a secret is given, private_key_jwt if a key is given, "
        "else none.",
    )
    private_key_file: Path | None = Field(
        None, description="PEM private key for private_key_jwt client assertions."
    )
    private_key_alg: str = Field("RS256", description="JWS algorithm for private_key_jwt.")
    private_key_id: str | None = Field(
        None,
        description="kid in the header of private_key_jwt assertions, naming the key in "
        "the client's JWKS. Default: the key's RFC 7638 thumbprint (SHA-256, base64url).",
    )
    service_account_token_file: Path | None = Field(
        None,
        description="Projected service-account token (subject token / assertion); "
        "re-read on every use.",
    )
    refresh_token_file: Path | None = Field(
        None,
        description="Bootstrap refresh token. With GRANT=refresh_token it is the only way "
        "in; with another grant it is used first, and that grant is the fallback when the "
        "IdP rejects the refresh token (invalid_grant).",
    )
    state_file: Path | None = Field(
        None,
        description="Where a rotated refresh token is kept (mode 0600) so a restart "
        "continues with the newest one. Default: .<output name>.state beside OUTPUT.",
    )
    family_secret: str | None = Field(
        None,
        description="Name of a Secret in the pod's namespace that holds the refresh-token "
        "family shared by every pod started from the same bootstrap token (usually the "
        "bootstrap Secret itself): one pod at a time presents the refresh token, the others "
        "take its access token. Needs get, watch and patch on that Secret. Unset: this pod "
        "keeps its refresh token to itself, in STATE_FILE.",
    )
    family_lease: float = Field(
        30.0,
        gt=0,
        description="Seconds a holder's claim on the family lasts while it presents the "
        "refresh token, and beyond its planned refresh; another pod takes over only after "
        "the holder has been silent this long.",
    )
    kubernetes_api: AnyHttpUrl | None = Field(
        None,
        description="kube-apiserver URL for FAMILY_SECRET. Default: "
        "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, as in every pod.",
    )
    kubernetes_token_file: Path = Field(
        Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        description="Service-account token for FAMILY_SECRET; re-read on every request.",
    )
    kubernetes_ca_file: Path = Field(
        Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
        description="CA bundle of the kube-apiserver for FAMILY_SECRET.",
    )
    scope: str | None = Field(None, description="Space-separated scopes to request.")
    audience: str | None = Field(None, description="audience request parameter.")
    resource: str | None = Field(None, description="resource request parameter (RFC 8707).")
    requested_token_type: str | None = Field(
        None, description="Token exchange: requested_token_type (RFC 8693 section 2.1)."
    )
    subject_token_type: str = Field(
        "urn:ietf:params:oauth:token-type:jwt",
        description="Token exchange: subject_token_type of the service-account token "
        "(Dex wants urn:ietf:params:oauth:token-type:id_token).",
    )
    token_params: str | None = Field(
        None,
        description="Extra form parameters for every token request, URL-encoded "
        "(e.g. connector_id=kubernetes for Dex's token exchange).",
    )
    output: Path = Field(
        Path("/var/run/secrets/token-refresher/token"), description="Path of the token file."
    )
    format: Literal["raw", "json"] = Field(
        "raw", description="raw: the token alone; json: token, type, expiry, scope."
    )
    file_mode: int = Field(
        0o444,
        description="Mode of the token file (octal, e.g. 0440). 0444 lets app containers "
        "under any UID read it; the volume is only mounted into this pod.",
    )
    refresh_ratio: float = Field(
        0.7, gt=0, lt=1, description="Refresh when this fraction of the lifetime has passed."
    )
    jitter: float = Field(
        0.1, ge=0, lt=0.5, description="± fraction of the lifetime added at random."
    )
    # 1 s, not more: the floor wins over expiry, so a floor near the lifetime of short
    # tokens (5 s ones exist) would refresh them only as they expire.
    min_refresh_interval: float = Field(
        1.0,
        ge=0,
        description="Floor in seconds between refreshes, so a token of a second or less "
        "cannot make a tight loop.",
    )
    default_lifetime: float = Field(
        300.0,
        gt=0,
        description="Lifetime in seconds assumed when the response has neither "
        "expires_in nor a JWT exp.",
    )
    on_expiry: Literal["remove", "keep"] = Field(
        "remove",
        description="remove the file when the token expired with no successful refresh, "
        "or keep it.",
    )
    ca_file: Path | None = Field(None, description="CA bundle for the IdP (default: system).")
    timeout: float = Field(10.0, gt=0, description="Timeout in seconds of one IdP request.")
    backoff_initial: float = Field(
        1.0, gt=0, description="First retry delay in seconds after a transient failure."
    )
    backoff_max: float = Field(60.0, gt=0, description="Cap in seconds of the exponential backoff.")
    permanent_error_interval: float = Field(
        300.0,
        gt=0,
        description="Ceiling in seconds of the retry delay after a permanent error "
        "(invalid_client, invalid_grant with no fallback): retried at growing intervals "
        "from a few seconds up to this, and at once when a credential file changes.",
    )
    listen: str = Field(
        "0.0.0.0:8099", description="host:port of /healthz, /readyz, /metrics, /status."
    )
    report_url: AnyHttpUrl | None = Field(
        None, description="Operator endpoint that turns failures into pod Events."
    )
    report_token_file: Path | None = Field(
        None, description="Projected token sent as the report's bearer credential."
    )
    report_ca_file: Path | None = Field(None, description="CA bundle file for REPORT_URL.")
    report_ca: str | None = Field(
        None,
        description="CA bundle for REPORT_URL as PEM text (public; set by injection, since "
        "a pod cannot mount a ConfigMap from the operator's namespace).",
    )
    report_audience: str = Field(
        "token-refresher-report",
        description="Audience of the projected token that authenticates reports.",
    )
    pod_namespace: str | None = Field(None, description="Namespace of this pod (for reports).")
    pod_name: str | None = Field(None, description="Name of this pod (for reports).")
    pod_uid: str | None = Field(None, description="UID of this pod (for reports).")
    log_format: Literal["json", "text"] = Field("json", description="Log line format.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )
    # NoDecode: the JSON is parsed by `_tokens_json`, so a typo is a config error line
    # naming TOKEN_REFRESHER_TOKENS rather than a SettingsError traceback from the source.
    tokens: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict,
        description="More tokens, each written to its own file: a JSON object "
        '{name: {setting: value}}, e.g. {"payments": {"audience": "payments-api"}}. A name '
        "is a DNS label other than 'default'; at most 7 (8 tokens with the default one). "
        "A named token inherits every setting it does not set, its credentials only when "
        "it uses the same ISSUER and TOKEN_URL; OUTPUT defaults to <OUTPUT's directory>/"
        "<name>, STATE_FILE to <STATE_FILE>.<name>.",
    )

    # Each named token's effective settings, in the order written (built by `_named`).
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

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be host:port, for example 0.0.0.0:8099")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        # Collect every cross-field problem at once: a user fixing a manifest wants the
        # whole list, not one error per deploy.
        problems: list[str] = []

        def need(field: str, why: str) -> None:
            if getattr(self, field) in (None, ""):
                problems.append(f"{env_name(field)}: required {why}")

        if self.issuer is None and self.token_url is None:
            problems.append(
                f"{env_name('issuer')} or {env_name('token_url')}: one is required "
                "(an OIDC issuer to discover the token endpoint, or the endpoint itself)"
            )
        if self.grant is Grant.REFRESH_TOKEN:
            need("refresh_token_file", "when TOKEN_REFRESHER_GRANT=refresh_token")
        if self.family_secret is not None and self.grant is not Grant.REFRESH_TOKEN:
            problems.append(
                f"{env_name('family_secret')}: only with TOKEN_REFRESHER_GRANT=refresh_token "
                f"(a family is a shared refresh token), not {self.grant}"
            )
        if self.family_secret is not None and self.family_lease <= self.timeout:
            # A holder still waiting for the IdP must never be overtaken (docs/family.md).
            problems.append(
                f"{env_name('family_lease')}: must be longer than {env_name('timeout')} "
                f"({self.timeout:g} s), so no pod takes over from a holder still waiting "
                "for the identity provider"
            )
        if self.grant in (Grant.TOKEN_EXCHANGE, Grant.JWT_BEARER):
            need("service_account_token_file", f"when TOKEN_REFRESHER_GRANT={self.grant}")
        auth = self.effective_client_auth
        if auth in (ClientAuth.CLIENT_SECRET_BASIC, ClientAuth.CLIENT_SECRET_POST):
            need("client_secret_file", f"for client authentication {auth}")
        if auth is ClientAuth.PRIVATE_KEY_JWT:
            need("private_key_file", "for client authentication private_key_jwt")
        if auth is ClientAuth.SERVICE_ACCOUNT:
            need("service_account_token_file", "for client authentication service_account")
        if auth is not ClientAuth.NONE or self.grant is Grant.CLIENT_CREDENTIALS:
            need("client_id", f"for grant {self.grant} with client authentication {auth}")
        if self.report_url is not None:
            need("report_token_file", f"when {env_name('report_url')} is set")
        if self.backoff_max < self.backoff_initial:
            problems.append(
                f"{env_name('backoff_max')}: must be at least "
                f"{env_name('backoff_initial')} ({self.backoff_initial})"
            )
        if problems:
            raise ValueError("\n".join(problems))
        # Named tokens are checked only once the default is right: they inherit from it,
        # so a mistake of the default's would come back once per token, under their names.
        problems = self._named_tokens()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _named_tokens(self) -> list[str]:
        """Build `_named` from `tokens`; the lines saying what is wrong, if anything."""
        problems: list[str] = []
        raw = self.tokens
        if len(raw) > MAX_TOKENS - 1:
            problems.append(
                f"{_TOKENS_ENV}: at most {MAX_TOKENS} tokens per sidecar, the default one "
                f"included, so at most {MAX_TOKENS - 1} named tokens, not {len(raw)}"
            )
        named: dict[str, Settings] = {}
        for name, overrides in raw.items():
            lines = _name_problems(name, overrides)
            if not lines:
                built = self._named_token(name, overrides)
                if isinstance(built, Settings):
                    named[name] = built
                    continue
                lines = built
            problems.extend(lines)
        if not problems:
            problems = _collisions({DEFAULT_TOKEN: self, **named})
        self._named = named
        return problems

    def _named_token(self, name: str, overrides: dict[str, Any]) -> Settings | list[str]:
        """The named token's settings: the default's, its own on top."""
        own = {key.lower(): _as_env_value(value) for key, value in overrides.items()}
        base = self.model_dump(include=set(TOKEN_FIELDS | _PROCESS_FIELDS))
        same_idp = all(
            key not in own or _same_url(own[key], getattr(self, key))
            for key in ("issuer", "token_url")
        )
        not_inherited = set(_OWN_FIELDS)
        if not same_idp:
            # Another IdP: neither the default's credentials nor the other half of its
            # address (an issuer with the default's token_url would still send the
            # request to the default's endpoint).
            not_inherited |= CREDENTIAL_FIELDS | {"issuer", "token_url"}
        for key in not_inherited:
            base[key] = None
        base["output"] = self.output.parent / name
        base["state_file"] = None if self.state_file is None else Path(f"{self.state_file}.{name}")
        # Every field is given explicitly, and an empty `tokens` ends the recursion.
        # An empty scoped env: no env source is read (settings_customise_sources).
        base["tokens"] = {}
        try:
            with _scoped({}):
                return Settings.model_validate({**base, **own})
        except ValidationError as exc:
            lines = config_errors(exc)
        return [_rename(line, name, not_inherited - own.keys()) for line in lines]

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
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        scoped = _SCOPED_ENV.get()
        if scoped is not None and not scoped:
            # Nothing to read (a named token, built from explicit values): an env source
            # would still walk every field, most of a validation's time.
            return (init_settings,)
        if scoped is not None:
            return (init_settings, _MappingEnvSource(settings_cls, scoped))
        return (init_settings, env_settings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from `TOKEN_REFRESHER_*` variables: of `env` when given (the operator
        passes the env it renders, so its own environment never leaks in), else of the
        process environment."""
        if env is None:
            return cls()
        with _scoped(env):
            return cls()

    @classmethod
    def describe(cls) -> Iterator[tuple[str, str, str]]:
        """(env var, default, description) for every setting: feeds --help and the docs."""
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
            yield env_name(name), shown, field.description or ""


# Settings of the whole process that a named token carries unchanged from the default.
_PROCESS_FIELDS = frozenset(
    {
        "kubernetes_api",
        "kubernetes_token_file",
        "kubernetes_ca_file",
        "listen",
        "report_url",
        "report_token_file",
        "report_ca_file",
        "report_ca",
        "report_audience",
        "pod_namespace",
        "pod_name",
        "pod_uid",
        "log_format",
        "log_level",
    }
)


def _name_problems(name: str, overrides: Any) -> list[str]:
    """What is wrong with a named token's name and the shape of its settings."""
    where = token_env_name(name)
    if name == DEFAULT_TOKEN:
        return [f"{where}: 'default' is the name of the unnamed token; choose another name"]
    if len(name) > 63 or not TOKEN_NAME.fullmatch(name):
        return [
            f"{where}: a token name must be a DNS label: at most 63 lower-case letters, "
            "digits and '-', starting and ending with a letter or digit"
        ]
    if not isinstance(overrides, dict):
        return [f'{where}: must be a JSON object of settings, e.g. {{"audience": "api"}}']
    problems: list[str] = []
    seen: set[str] = set()
    for key, value in overrides.items():
        field = key.lower()
        if field in seen:
            problems.append(f"{token_env_name(name, field)}: set twice")
        seen.add(field)
        if field in _PROCESS_FIELDS or field == "tokens":
            problems.append(
                f"{token_env_name(name, field)}: not a per-token setting; it is set once "
                f"for the whole sidecar ({env_name(field)})"
            )
        elif field not in TOKEN_FIELDS:
            problems.append(f"{token_env_name(name, field)}: not a setting")
        elif isinstance(value, bool) or not isinstance(value, str | int | float):
            problems.append(f"{token_env_name(name, field)}: must be a string or a number")
    return problems


def _as_env_value(value: str | float) -> str:
    # As if it had come from an env var: a number means what its text would, so
    # "file_mode": 440 is the octal mode 0440, as TOKEN_REFRESHER_FILE_MODE=440 is.
    return value if isinstance(value, str) else json.dumps(value)


def _same_url(value: str, current: AnyHttpUrl | None) -> bool:
    if current is None:
        return not value
    try:
        return AnyHttpUrl(value) == current
    except ValueError:
        return False  # not a URL: validation says so; it is no reason to share secrets


_FIELD_ENV = re.compile(r"\b" + re.escape(ENV_PREFIX) + r"([A-Z0-9_]+)\b")


def _rename(line: str, token: str, not_inherited: set[str]) -> str:
    """A default-token error line, about a named token: its env names, and why a
    credential it lacks was not inherited."""

    def sub(match: re.Match[str]) -> str:
        field = match.group(1).lower()
        return token_env_name(token, field) if field in TOKEN_FIELDS else match.group(0)

    renamed = _FIELD_ENV.sub(sub, line)
    lead = line.split(":", 1)[0]
    field = lead[len(ENV_PREFIX) :].lower() if lead.startswith(ENV_PREFIX) else ""
    if field in not_inherited and "required" in line:
        why = (
            "a refresh token is never shared between tokens"
            if field in _OWN_FIELDS
            else "it names another IdP than the default token, so it does not inherit "
            "the default's credentials"
        )
        renamed += f" (not inherited: {why})"
    return renamed


def _collisions(tokens: Mapping[str, Settings]) -> list[str]:
    """Two tokens writing one file would overwrite each other's token or refresh token."""
    problems: list[str] = []
    used: dict[Path, tuple[str, str]] = {}
    for name, settings in tokens.items():
        for field, path in (
            ("output", settings.output),
            ("state_file", settings.effective_state_file),
        ):
            key = Path(path).absolute()
            if key in used:
                other, other_field = used[key]
                problems.append(
                    f"{token_env_name(name, field)}: {path} is also the "
                    f"{other_field.replace('_', ' ')} of token {other} "
                    f"({token_env_name(other, other_field)}); two tokens may not share a file"
                )
            else:
                used[key] = (name, field)
    return problems


@contextmanager
def _scoped(env: Mapping[str, str]) -> Iterator[None]:
    token = _SCOPED_ENV.set(env)
    try:
        yield
    finally:
        _SCOPED_ENV.reset(token)


def config_errors(exc: ValidationError) -> list[str]:
    """One plain line per wrong setting, naming the env var and what is allowed."""
    lines: list[str] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = err.get("loc", ())
        msg = str(err.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if not loc:  # a model-level check: its lines already name their env vars
            lines.extend(msg.splitlines())
            continue
        field = str(loc[0])
        ctx = err.get("ctx") or {}
        if err.get("type") in ("enum", "literal_error") and "expected" in ctx:
            msg = f"must be one of {ctx['expected']}"
        lines.append(f"{env_name(field)}: {msg}")
    return lines
