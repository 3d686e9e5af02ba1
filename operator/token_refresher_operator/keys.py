"""The one table of pod annotations: every `token-refresher.io/<key>` and what it drives.

Adding an annotation is one row here (plus its test): the parser (`annotations.parse`)
takes its keys, checks and defaults from `KEYS`, the env renderer (`sidecarenv.render_env`)
writes the rows that set a sidecar field in this order, the webhook names a sidecar
problem by the row's key, and tests hold the README's annotation table and the chart's
`defaults` values and schema to it (tests/test_docs.py, tests/operator/test_keys.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from token_refresher.settings import ClientAuth, Grant
from token_refresher_operator.annotation_checks import (
    check_containers,
    check_enum,
    check_file,
    check_mount_path,
    check_ratio,
    check_secret_name,
    check_secret_ref,
    check_text,
    check_url,
)

__all__ = [
    "ANNOTATION_OF",
    "BY_NAME",
    "DEFAULT_FILE",
    "DEFAULT_FORMAT",
    "DEFAULT_MOUNT_PATH",
    "FIELD_OF",
    "KEYS",
    "MARKERS",
    "PER_TOKEN_KEYS",
    "SECRET_KEYS",
    "TABLE",
    "Key",
]

DEFAULT_FILE = "token"
DEFAULT_FORMAT = "raw"
DEFAULT_MOUNT_PATH = "/var/run/secrets/token-refresher"


@dataclass(frozen=True, kw_only=True)
class Key:
    """One annotation, `token-refresher.io/<name>`."""

    name: str
    doc: str  # the README's "meaning" column
    # The sidecar setting it sets (for a Secret, the file it is mounted as); None: it is
    # about the pod (where the file goes, which containers get it) or a marker.
    field: str | None = None
    check: Callable[[str], str | None] = check_text
    # `<secret>/<key>`: the operator mounts that Secret's key into the sidecar alone.
    secret: bool = False
    per_token: bool = True  # may be set per token as `<name>.<token>`
    default: str | None = None  # what the operator assumes when nothing sets it
    chart_default: str | None = ""  # in the chart's `defaults`; None: not offered there
    marker: bool = False  # a flag on the pod, never configuration


def _secret(name: str, field: str, doc: str) -> Key:
    """A `<secret>/<key>` annotation: never a cluster default, since a Secret lives in
    the pod's own namespace."""
    return Key(
        name=name, field=field, doc=doc, check=check_secret_ref, secret=True, chart_default=None
    )


# In the order the sidecar's env is rendered (a stable env is the webhook's cache key).
TABLE: tuple[Key, ...] = (
    Key(
        name="issuer",
        field="issuer",
        check=check_url,
        doc="OIDC issuer; the token endpoint is discovered",
    ),
    Key(
        name="token-url",
        field="token_url",
        check=check_url,
        doc="token endpoint (instead of, or overriding, discovery)",
    ),
    Key(
        name="grant",
        field="grant",
        check=check_enum(tuple(g.value for g in Grant)),
        default=Grant.CLIENT_CREDENTIALS.value,
        doc="`client_credentials`, `refresh_token`, `token_exchange`, `jwt_bearer`",
    ),
    Key(name="client-id", field="client_id", doc="OAuth2 client id"),
    Key(
        name="client-auth",
        field="client_auth",
        check=check_enum(tuple(a.value for a in ClientAuth)),
        doc="`client_secret_basic`, `client_secret_post`, `private_key_jwt`, "
        "`service_account`, `none`",
    ),
    _secret(
        "client-secret",
        "client_secret_file",
        "`<secret>/<key>` in the pod's namespace, mounted into the sidecar only",
    ),
    _secret("private-key", "private_key_file", "`<secret>/<key>` holding a PEM key, likewise"),
    _secret(
        "refresh-token",
        "refresh_token_file",
        "`<secret>/<key>` holding the bootstrap refresh token, likewise",
    ),
    Key(
        name="private-key-id",
        field="private_key_id",
        doc="`kid` of the `private_key_jwt` assertion (default: the key's RFC 7638 thumbprint)",
    ),
    Key(
        name="family-secret",
        field="family_secret",
        check=check_secret_name,
        chart_default=None,
        doc="Secret whose key `token-refresher-family` holds the refresh-token family",
    ),
    Key(
        name="service-account-audience",
        field="service_account_token_file",
        doc="audience of the projected token used as subject token, assertion or client assertion",
    ),
    Key(name="scope", field="scope", doc="request parameters"),
    Key(name="audience", field="audience", doc="request parameters"),
    Key(name="resource", field="resource", doc="request parameters"),
    Key(
        name="file",
        field="output",
        check=check_file,
        default=DEFAULT_FILE,
        chart_default=DEFAULT_FILE,
        doc="file name inside the mount",
    ),
    Key(
        name="format",
        field="format",
        check=check_enum(("raw", "json")),
        default=DEFAULT_FORMAT,
        chart_default=DEFAULT_FORMAT,
        doc="`raw` or `json`",
    ),
    Key(
        name="refresh-ratio",
        field="refresh_ratio",
        check=check_ratio,
        doc="refresh when this fraction of the lifetime has passed",
    ),
    Key(
        name="subject-token-type",
        field="subject_token_type",
        doc="token exchange: type of the service-account token",
    ),
    Key(
        name="token-params",
        field="token_params",
        doc="extra URL-encoded form fields for every token request",
    ),
    Key(
        name="mount-path",
        check=check_mount_path,
        per_token=False,
        default=DEFAULT_MOUNT_PATH,
        chart_default=DEFAULT_MOUNT_PATH,
        doc="directory in the app containers",
    ),
    Key(
        name="containers",
        check=check_containers,
        per_token=False,
        doc="app containers that get the mount (comma list; default all)",
    ),
    Key(
        name="inject",
        marker=True,
        per_token=False,
        chart_default=None,
        doc='`"true"` enables injection (only the pod\'s own annotation counts)',
    ),
    Key(
        name="injected",
        marker=True,
        per_token=False,
        chart_default=None,
        doc="set by the webhook on the pods it mutated; reports are accepted only from those",
    ),
)

BY_NAME: Mapping[str, Key] = {key.name: key for key in TABLE}
# Everything a user may set, without the prefix; markers are accepted on pods but never
# read as configuration.
KEYS = frozenset(BY_NAME)
MARKERS = frozenset(key.name for key in TABLE if key.marker)
# What one token may set for itself as `<key>.<name>`. The others describe the pod: one
# sidecar, one volume, one mount path, one list of containers for all its tokens.
PER_TOKEN_KEYS = frozenset(key.name for key in TABLE if key.per_token)
SECRET_KEYS = tuple(key.name for key in TABLE if key.secret)
# Sidecar settings field <-> the annotation a person writes to set it.
ANNOTATION_OF: Mapping[str, str] = {key.field: key.name for key in TABLE if key.field}
FIELD_OF: Mapping[str, str] = {key.name: key.field for key in TABLE if key.field}
