"""Checks of one annotation value each, as a person reads the answer.

Every message here ends up in front of someone whose `kubectl apply` was just denied, so
each one says what is allowed and echoes what it got. Annotations never hold secrets
(they only *name* a Secret and a key), so echoing them is safe. The checks need no
knowledge of the sidecar's settings model (enum spellings, `<secret>/<key>` forms, paths,
container names); whether the whole combination works is the sidecar model's to say.
The table in `keys.py` says which check each annotation gets.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

__all__ = [
    "SecretRef",
    "check_containers",
    "check_enum",
    "check_file",
    "check_mount_path",
    "check_ratio",
    "check_secret_name",
    "check_secret_ref",
    "check_text",
    "check_url",
    "container_list",
    "secret_ref",
]

# Secret names are DNS-1123 subdomains; Secret keys are [-._a-zA-Z0-9]+ (both ≤ 253).
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_FILE_NAME = re.compile(r"[A-Za-z0-9._-]+")
_URL = re.compile(r"https?://[^\s/?#]+[^\s]*")

# Where the sidecar keeps its own credentials; an app mount there would shadow them.
_RESERVED_DIRS = ("/var/run/secrets/token-refresher.io", "/var/lib/token-refresher")


@dataclass(frozen=True, kw_only=True)
class SecretRef:
    """`<secret>/<key>`: a Secret in the pod's namespace and one of its keys."""

    secret: str
    key: str


def _one_of(allowed: Collection[str], got: str) -> str:
    return f"must be one of {', '.join(allowed)} (got {got!r})"


def check_url(value: str) -> str | None:
    if _URL.fullmatch(value):
        return None
    return f"must be an http(s) URL such as https://login.example.com/realms/prod (got {value!r})"


def check_enum(allowed: tuple[str, ...]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in allowed else _one_of(allowed, value)

    return check


def secret_ref(value: str) -> SecretRef | None:
    secret, sep, key = value.partition("/")
    if not sep or len(secret) > 253 or len(key) > 253 or key in (".", ".."):
        return None
    if not _DNS1123_SUBDOMAIN.fullmatch(secret) or not _SECRET_KEY.fullmatch(key):
        return None
    return SecretRef(secret=secret, key=key)


def check_secret_ref(value: str) -> str | None:
    if secret_ref(value) is not None:
        return None
    return (
        "must be <secret>/<key>: the name of a Secret in the pod's namespace and one of "
        f"its keys, such as billing-oauth/secret (got {value!r})"
    )


def check_secret_name(value: str) -> str | None:
    if _DNS1123_SUBDOMAIN.fullmatch(value) and len(value) <= 253:
        return None
    return (
        "must be the name of a Secret in the pod's namespace, such as billing-oauth "
        f"(got {value!r})"
    )


def check_ratio(value: str) -> str | None:
    try:
        ratio = float(value)
    except ValueError:
        ratio = -1.0
    if 0.0 < ratio < 1.0:
        return None
    return f"must be a number between 0 and 1, both excluded, such as 0.7 (got {value!r})"


def check_mount_path(value: str) -> str | None:
    parts = value.split("/")
    if not value.startswith("/") or value == "/" or ".." in parts or ":" in value:
        return (
            "must be an absolute directory path such as /var/run/secrets/token-refresher "
            f"(got {value!r})"
        )
    normal = posixpath.normpath(value)
    for reserved in _RESERVED_DIRS:
        if (
            normal == reserved
            or normal.startswith(reserved + "/")
            or reserved.startswith(normal + "/")
        ):
            return (
                f"must not be {reserved}, inside it or above it: the sidecar keeps its "
                f"credentials there (got {value!r})"
            )
    return None


def check_file(value: str) -> str | None:
    if _FILE_NAME.fullmatch(value) and value not in (".", "..") and len(value) <= 255:
        return None
    return (
        "must be a plain file name such as token: letters, digits, '.', '-' and '_', "
        f"no '/' (got {value!r})"
    )


def container_list(value: str) -> tuple[str, ...] | None:
    names = tuple(name.strip() for name in value.split(","))
    if not names or any(not name for name in names):
        return None
    return names


def check_containers(value: str) -> str | None:
    if container_list(value) is not None:
        return None
    return f"must be a comma-separated list of container names such as app,worker (got {value!r})"


def check_text(value: str) -> str | None:
    if value.strip() != value or any(ch in value for ch in "\r\n\0"):
        return f"must be a single line without leading or trailing spaces (got {value!r})"
    return None
