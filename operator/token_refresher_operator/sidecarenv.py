"""The sidecar's `TOKEN_REFRESHER_*` env for a pod, and what its named tokens mount.

`render_env` writes one env var per annotation row that sets a sidecar field (`keys.TABLE`,
in its order, so one pod template always renders the same env: the webhook caches its
verdict by it), the operator's own settings (listen, report endpoint) and the downward
API. Named tokens (issue 17) go into the one env var `TOKEN_REFRESHER_TOKENS` as JSON
holding only what each token sets itself: the sidecar's model does the inheriting from
the default token, credentials only at the same IdP. The operator only adds what needs
Kubernetes (`named_mounts`): their Secrets and service-account tokens, mounted into the
sidecar alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from token_refresher.settings import ClientAuth, Grant, env_name
from token_refresher_operator.annotations import (
    InjectionSpec,
    NamedToken,
    SecretRef,
)
from token_refresher_operator.config import ClusterConfig
from token_refresher_operator.keys import FIELD_OF, SECRET_KEYS, TABLE
from token_refresher_operator.layout import (
    CREDENTIALS_DIR,
    SA_TOKEN_SECONDS,
    SA_TOKEN_VOLUME,
    SECRET_VOLUMES,
    STATE_FILE,
)
from token_refresher_operator.manifests import (
    EnvVar,
    Volume,
)

__all__ = [
    "NO_NAMED",
    "NamedMounts",
    "named_mounts",
    "needs_sa_token",
    "projected_token",
    "render_env",
    "secret_file",
    "secret_refs",
    "secret_volume",
]


def needs_sa_token(spec: InjectionSpec) -> bool:
    return (
        spec.grant in (Grant.TOKEN_EXCHANGE, Grant.JWT_BEARER)
        or spec.client_auth is ClientAuth.SERVICE_ACCOUNT
    )


def secret_file(kind: str) -> str:
    return f"{CREDENTIALS_DIR}/{kind}/{kind}"


def secret_refs(spec: InjectionSpec) -> dict[str, SecretRef]:
    refs = {kind: spec.ref(kind) for kind in SECRET_KEYS}
    return {kind: ref for kind, ref in refs.items() if ref is not None}


@dataclass
class NamedMounts:
    """What the named tokens add: their settings (JSON), and Secret and service-account
    token volumes with the sidecar's mount directory of each."""

    settings: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    volumes: list[tuple[Volume, str]] = dataclasses.field(default_factory=list)


NO_NAMED = NamedMounts()  # read only


def _same_idp(spec: InjectionSpec, token: NamedToken) -> bool:
    # As the sidecar decides whether credentials are inherited; it compares the URLs
    # normalised, so where it finds the same IdP and this does not, it inherits anyway.
    own = token.settings
    return own.get("issuer", spec.issuer) == spec.issuer and (
        own.get("token-url", spec.token_url) == spec.token_url
    )


def named_mounts(spec: InjectionSpec, *, mode: int) -> NamedMounts:
    """Named tokens' JSON settings and volumes; secrets shared where the ref is the same."""
    named = NamedMounts()
    # (kind, ref) -> file: the default token's first, so an equal ref reuses its mount.
    files = {(kind, ref): secret_file(kind) for kind, ref in secret_refs(spec).items()}
    sa_files: dict[str, str] = {}
    if needs_sa_token(spec) and spec.service_account_audience:
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
                    named.volumes.append((secret_volume(volume, key, ref, mode), directory))
                    files[key, ref] = f"{directory}/{key}"
                own[FIELD_OF[key]] = files[key, ref]
            elif key == "file":
                own["output"] = spec.file_of(token)
            elif key != "service-account-audience":
                own[FIELD_OF[key]] = value
        audience = _sa_audience(spec, token)
        if audience is not None:
            if audience not in sa_files:
                volume = f"{SA_TOKEN_VOLUME}-{len(sa_files) + 1}"
                directory = f"{CREDENTIALS_DIR}/serviceaccount-{len(sa_files) + 1}"
                named.volumes.append((projected_token(volume, audience), directory))
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
    if same_idp and not needs_sa_token(spec):
        # The default renders no token file to inherit; the unnamed audience is this
        # token's too, as every other unnamed setting is.
        return spec.service_account_audience
    return None  # inherited from the default, or (another IdP) missing: the sidecar says


def render_env(
    *,
    spec: InjectionSpec,
    config: ClusterConfig,
    report_audience: str,
    named: NamedMounts | None = None,
) -> list[EnvVar]:
    """The sidecar's TOKEN_REFRESHER_* env for this pod."""
    env: list[EnvVar] = []

    def put(field: str, value: str | None) -> None:
        if value is not None:
            env.append({"name": env_name(field), "value": value})

    # Every annotation that sets a sidecar field, in the table's order; the few whose
    # value is a file the operator mounts say where.
    sa_token = needs_sa_token(spec) and spec.service_account_audience
    for key in TABLE:
        if key.field is None:
            continue
        value = spec.get(key.name)
        if key.secret:
            value = secret_file(key.name) if value is not None else None
        elif key.name == "service-account-audience":
            value = f"{CREDENTIALS_DIR}/serviceaccount/token" if sa_token else None
        elif key.name == "file":
            value = spec.token_file
        put(key.field, value)
    put("state_file", STATE_FILE)
    if spec.tokens:
        named = named if named is not None else named_mounts(spec, mode=0o444)
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


def secret_volume(name: str, kind: str, ref: SecretRef, mode: int) -> Volume:
    return {
        "name": name,
        "secret": {
            "secretName": ref.secret,
            "items": [{"key": ref.key, "path": kind}],
            "defaultMode": mode,
        },
    }


def projected_token(name: str, audience: str) -> Volume:
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
