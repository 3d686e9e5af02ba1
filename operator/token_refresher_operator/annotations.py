"""Pod annotations (`token-refresher.io/...`) merged over cluster defaults, and checked.

This is the user's side of the webhook: every message here ends up in front of a person
whose `kubectl apply` was just denied, so each one names the annotation, says what is
allowed and echoes what it got. Annotations never hold secrets (they only *name* a
Secret and a key), so echoing them is safe.

The checks here are the ones that need no knowledge of the sidecar's settings model
(enum spellings, `<secret>/<key>` forms, paths, container names, token names). Whether
the whole combination makes a working sidecar is decided by the sidecar's own model in
`patch`, so the two can never disagree. A key suffixed `.<name>` sets that setting for
the named token `<name>` (issue 17); the unsuffixed keys are the default token, as ever.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from token_refresher.settings import DEFAULT_TOKEN, MAX_TOKENS, TOKEN_NAME, ClientAuth, Grant
from token_refresher_operator.errors import AnnotationError

__all__ = [
    "DEFAULT_FILE",
    "DEFAULT_FORMAT",
    "DEFAULT_MOUNT_PATH",
    "INJECT",
    "INJECTED",
    "KEYS",
    "MAX_TOKENS",
    "MAX_VALUE_LENGTH",
    "PER_TOKEN_KEYS",
    "PREFIX",
    "RESERVED_TOKEN",
    "InjectionSpec",
    "NamedToken",
    "SecretRef",
    "annotation",
    "merge",
    "parse",
    "token_errors",
    "value_errors",
    "wants_injection",
]

PREFIX = "token-refresher.io/"
INJECT = PREFIX + "inject"
INJECTED = PREFIX + "injected"  # set by the webhook on the pods it mutated

DEFAULT_FILE = "token"
DEFAULT_FORMAT = "raw"
DEFAULT_MOUNT_PATH = "/var/run/secrets/token-refresher"
FORMATS = ("raw", "json")

# Long enough for any issuer URL or scope list seen in the wild; short enough that a
# pasted PEM or a token (which never belongs in an annotation) is refused on sight.
MAX_VALUE_LENGTH = 2048

# Mutating webhooks see a pod before the apiserver validates it, so an annotation *name*
# can be any length there; a denial echoes at most this much of an unknown one.
_SHOWN_KEY_LENGTH = 100

# Everything a user may set, without the prefix. `inject` and `injected` are markers,
# not settings: they are accepted on pods but never read as configuration.
KEYS = frozenset(
    {
        "inject",
        "injected",
        "issuer",
        "token-url",
        "grant",
        "client-id",
        "client-auth",
        "scope",
        "audience",
        "resource",
        "client-secret",
        "private-key",
        "private-key-id",
        "refresh-token",
        "family-secret",
        "service-account-audience",
        "file",
        "format",
        "mount-path",
        "containers",
        "refresh-ratio",
        "subject-token-type",
        "token-params",
    }
)
_MARKERS = frozenset({"inject", "injected"})
# What one token may set for itself as `<key>.<name>`. The others describe the pod: one
# sidecar, one volume, one mount path, one list of containers for all its tokens.
PER_TOKEN_KEYS = KEYS - _MARKERS - {"mount-path", "containers"}

# The unnamed token's name in metrics, /status, reports and logs, so no named token's;
# the limit of 8 tokens per pod and the form of a name are the sidecar's too.
RESERVED_TOKEN = DEFAULT_TOKEN

# Secret names are DNS-1123 subdomains; Secret keys are [-._a-zA-Z0-9]+ (both ≤ 253).
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_FILE_NAME = re.compile(r"[A-Za-z0-9._-]+")
_URL = re.compile(r"https?://[^\s/?#]+[^\s]*")

# Where the sidecar keeps its own credentials; an app mount there would shadow them.
_RESERVED_DIRS = ("/var/run/secrets/token-refresher.io", "/var/lib/token-refresher")


def annotation(key: str) -> str:
    """The full annotation name for a key: `grant` -> `token-refresher.io/grant`."""
    return PREFIX + key


@dataclass(frozen=True, kw_only=True)
class SecretRef:
    """`<secret>/<key>`: a Secret in the pod's namespace and one of its keys."""

    secret: str
    key: str


@dataclass(frozen=True, kw_only=True)
class NamedToken:
    """A named token: its own settings, keyed by annotation without the `.<name>` suffix.

    Only what the pod (or the cluster defaults) set for this token: the rest it inherits
    from the default token in the sidecar, which applies the credentials safety rule.
    """

    name: str
    settings: Mapping[str, str]
    file: str  # its file name inside the mount: `file.<name>`, else the name

    def key(self, setting: str) -> str:
        """The annotation that sets `setting` for this token: `audience.payments`."""
        return f"{setting}.{self.name}"

    def ref(self, setting: str) -> SecretRef | None:
        value = self.settings.get(setting)
        return _secret_ref(value) if value is not None else None


@dataclass(frozen=True, kw_only=True)
class InjectionSpec:
    """What one pod asks for, after merging over the defaults and checking each value."""

    issuer: str | None = None
    token_url: str | None = None
    grant: Grant = Grant.CLIENT_CREDENTIALS
    client_id: str | None = None
    client_auth: ClientAuth | None = None
    scope: str | None = None
    audience: str | None = None
    resource: str | None = None
    client_secret: SecretRef | None = None
    private_key: SecretRef | None = None
    private_key_id: str | None = None
    refresh_token: SecretRef | None = None
    family_secret: str | None = None
    service_account_audience: str | None = None
    file: str = DEFAULT_FILE
    format: str = DEFAULT_FORMAT
    mount_path: str = DEFAULT_MOUNT_PATH
    containers: tuple[str, ...] | None = None  # None: every app container
    refresh_ratio: str | None = None
    subject_token_type: str | None = None
    token_params: str | None = None
    tokens: tuple[NamedToken, ...] = ()  # sorted by name

    @property
    def token_file(self) -> str:
        return posixpath.join(self.mount_path, self.file)

    def file_of(self, token: NamedToken) -> str:
        return posixpath.join(self.mount_path, token.file)


def wants_injection(annotations: Mapping[str, str] | None) -> bool:
    """Only the pod's own annotation opts in: a cluster default cannot inject everything."""
    return (annotations or {}).get(INJECT) == "true"


def merge(*, annotations: Mapping[str, str] | None, defaults: Mapping[str, str]) -> dict[str, str]:
    """Pod annotations (prefix stripped) over the cluster defaults.

    An empty annotation value means "not set": it removes a cluster default rather than
    setting an empty one, which is how a pod opts out of, say, a default scope.
    """
    merged = {key: value for key, value in defaults.items() if key not in _MARKERS}
    for name, value in (annotations or {}).items():
        if name.startswith(PREFIX):
            merged[name[len(PREFIX) :]] = value
    return {key: value for key, value in merged.items() if value != ""}


def _one_of(allowed: Collection[str], got: str) -> str:
    return f"must be one of {', '.join(allowed)} (got {got!r})"


def _check_url(value: str) -> str | None:
    if _URL.fullmatch(value):
        return None
    return f"must be an http(s) URL such as https://login.example.com/realms/prod (got {value!r})"


def _check_enum(allowed: tuple[str, ...]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in allowed else _one_of(allowed, value)

    return check


def _secret_ref(value: str) -> SecretRef | None:
    secret, sep, key = value.partition("/")
    if not sep or len(secret) > 253 or len(key) > 253 or key in (".", ".."):
        return None
    if not _DNS1123_SUBDOMAIN.fullmatch(secret) or not _SECRET_KEY.fullmatch(key):
        return None
    return SecretRef(secret=secret, key=key)


def _check_secret_ref(value: str) -> str | None:
    if _secret_ref(value) is not None:
        return None
    return (
        "must be <secret>/<key>: the name of a Secret in the pod's namespace and one of "
        f"its keys, such as billing-oauth/secret (got {value!r})"
    )


def _check_secret_name(value: str) -> str | None:
    if _DNS1123_SUBDOMAIN.fullmatch(value) and len(value) <= 253:
        return None
    return (
        "must be the name of a Secret in the pod's namespace, such as billing-oauth "
        f"(got {value!r})"
    )


def _check_ratio(value: str) -> str | None:
    try:
        ratio = float(value)
    except ValueError:
        ratio = -1.0
    if 0.0 < ratio < 1.0:
        return None
    return f"must be a number between 0 and 1, both excluded, such as 0.7 (got {value!r})"


def _check_mount_path(value: str) -> str | None:
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


def _check_file(value: str) -> str | None:
    if _FILE_NAME.fullmatch(value) and value not in (".", "..") and len(value) <= 255:
        return None
    return (
        "must be a plain file name such as token: letters, digits, '.', '-' and '_', "
        f"no '/' (got {value!r})"
    )


def _container_list(value: str) -> tuple[str, ...] | None:
    names = tuple(name.strip() for name in value.split(","))
    if not names or any(not name for name in names):
        return None
    return names


def _check_containers(value: str) -> str | None:
    if _container_list(value) is not None:
        return None
    return f"must be a comma-separated list of container names such as app,worker (got {value!r})"


def _check_text(value: str) -> str | None:
    if value.strip() != value or any(ch in value for ch in "\r\n\0"):
        return f"must be a single line without leading or trailing spaces (got {value!r})"
    return None


_CHECKS: dict[str, Callable[[str], str | None]] = {
    "issuer": _check_url,
    "token-url": _check_url,
    "grant": _check_enum(tuple(g.value for g in Grant)),
    "client-auth": _check_enum(tuple(a.value for a in ClientAuth)),
    "format": _check_enum(FORMATS),
    "client-secret": _check_secret_ref,
    "private-key": _check_secret_ref,
    "refresh-token": _check_secret_ref,
    "family-secret": _check_secret_name,
    "refresh-ratio": _check_ratio,
    "mount-path": _check_mount_path,
    "file": _check_file,
    "containers": _check_containers,
}


_UNKNOWN = "unknown setting; known: " + ", ".join(sorted(KEYS - _MARKERS))


def _shown(key: str) -> str:
    # Escaped, so the denial stays one line whatever the name holds, and cut: mutating
    # webhooks see a pod before the apiserver checks its annotation names' length.
    return repr(key[:_SHOWN_KEY_LENGTH])[1:-1] + ("…" if len(key) > _SHOWN_KEY_LENGTH else "")


def _named_key_problem(setting: str, token: str, *, name: Callable[[str], str]) -> str | None:
    """What is wrong with the key `<setting>.<token>` itself, or None."""
    if setting not in KEYS:
        return _UNKNOWN
    if setting not in PER_TOKEN_KEYS:
        return (
            f"{setting} is set for the whole pod, not per token: use {name(setting)} "
            f"(per token: {', '.join(sorted(PER_TOKEN_KEYS))})"
        )
    if token == RESERVED_TOKEN:
        return (
            f"{RESERVED_TOKEN!r} is the name of the unnamed token: set {name(setting)} "
            "for it, or give this token another name"
        )
    if len(token) > 63 or not TOKEN_NAME.fullmatch(token):
        return (
            f"the token name after '{setting}.' must be a DNS label: lower-case letters, "
            "digits and '-', starting and ending with a letter or digit, at most 63 "
            f"characters, such as payments (got '{_shown(token)}')"
        )
    return None


def _named(values: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Named tokens' settings by name, from the keys that are well formed."""
    tokens: dict[str, dict[str, str]] = {}
    for key, value in values.items():
        if "." in key:
            setting, _, token = key.partition(".")
            if _named_key_problem(setting, token, name=annotation) is None:
                tokens.setdefault(token, {})[setting] = value
    return tokens


def token_errors(
    values: Mapping[str, str], *, name: Callable[[str], str] = annotation
) -> list[str]:
    """Too many tokens: one line per token past the limit, naming its first key.

    Which tokens are "past" it is the alphabetical order of their names: arbitrary, but
    the same on every try.
    """
    tokens = _named(values)
    if len(tokens) < MAX_TOKENS:
        return []
    problems = []
    for token in sorted(tokens)[MAX_TOKENS - 1 :]:
        first = min(tokens[token])
        problems.append(
            f"{name(f'{first}.{token}')}: too many tokens: a pod has at most {MAX_TOKENS}, "
            f"the default one included, and these annotations name {len(tokens) + 1} "
            f"(drop token {token!r} or another)"
        )
    return problems


def value_errors(
    values: Mapping[str, str], *, name: Callable[[str], str] = annotation
) -> list[str]:
    """One line per unusable value, each value on its own (no pod, no combination).

    `name` spells the key in the message: the annotation for a pod, `defaults.<key>`
    for the cluster configuration.
    """
    problems: list[str] = []
    for key in sorted(values):
        value = values[key]
        setting = key
        if "." in key:  # `<setting>.<name>`: a named token's
            setting, _, token = key.partition(".")
            problem = _named_key_problem(setting, token, name=name)
            if problem is not None:
                problems.append(f"{name(_shown(key))}: {problem}")
                continue
        elif key not in KEYS:
            problems.append(f"{name(_shown(key))}: {_UNKNOWN}")
            continue
        if key in _MARKERS:
            continue
        if len(value) > MAX_VALUE_LENGTH:
            problems.append(
                f"{name(key)}: must be at most {MAX_VALUE_LENGTH} characters (got {len(value)})"
            )
            continue
        check = _CHECKS.get(setting, _check_text)
        problem = check(value)
        if problem is not None:
            problems.append(f"{name(key)}: {problem}")
    return problems


def _file_clashes(default_file: str, named: Mapping[str, Mapping[str, str]]) -> list[str]:
    # Two tokens in one file would overwrite each other on every refresh.
    owner = {default_file: RESERVED_TOKEN}
    problems = []
    for token in sorted(named):
        file = named[token].get("file", token)
        if file in owner:
            problems.append(
                f"{annotation('file.' + token)}: token {token} would be written to the file "
                f"{file!r}, which is token {owner[file]}'s: give it another file name"
            )
        else:
            owner[file] = token
    return problems


def parse(
    *,
    annotations: Mapping[str, str] | None,
    defaults: Mapping[str, str],
    containers: Collection[str],
    init_containers: Collection[str] = (),
) -> InjectionSpec:
    """The pod's request, or AnnotationError listing every problem at once.

    `containers` and `init_containers` are the names in the pod: `containers` may name
    either (an init container that runs after the sidecar can use the token too), and
    by default every app container gets the token.
    """
    values = merge(annotations=annotations, defaults=defaults)
    problems = value_errors(values)
    # Only pods that name a token pay for reading them (most name none): one search of
    # the joined keys, in C, is all the others pay.
    named = _named(values) if "." in "".join(values) else {}
    if named:
        problems += token_errors(values)
        if not problems:
            problems += _file_clashes(values.get("file", DEFAULT_FILE), named)
    selected: tuple[str, ...] | None = None
    if "containers" in values and not any(p.startswith(annotation("containers")) for p in problems):
        selected = _container_list(values["containers"])
        known = [*containers, *init_containers]
        for wanted in selected or ():
            if wanted not in known:
                problems.append(
                    f"{annotation('containers')}: no container named {wanted!r} in the pod "
                    f"(it has: {', '.join(known)})"
                )
    if problems:
        raise AnnotationError(problems)

    def ref(key: str) -> SecretRef | None:
        return _secret_ref(values[key]) if key in values else None

    tokens = tuple(
        NamedToken(name=token, settings=named[token], file=named[token].get("file", token))
        for token in sorted(named)
    )
    return InjectionSpec(
        tokens=tokens,
        issuer=values.get("issuer"),
        token_url=values.get("token-url"),
        grant=Grant(values.get("grant", Grant.CLIENT_CREDENTIALS.value)),
        client_id=values.get("client-id"),
        client_auth=ClientAuth(values["client-auth"]) if "client-auth" in values else None,
        scope=values.get("scope"),
        audience=values.get("audience"),
        resource=values.get("resource"),
        client_secret=ref("client-secret"),
        private_key=ref("private-key"),
        private_key_id=values.get("private-key-id"),
        refresh_token=ref("refresh-token"),
        family_secret=values.get("family-secret"),
        service_account_audience=values.get("service-account-audience"),
        file=values.get("file", DEFAULT_FILE),
        format=values.get("format", DEFAULT_FORMAT),
        mount_path=posixpath.normpath(values.get("mount-path", DEFAULT_MOUNT_PATH)),
        containers=selected,
        refresh_ratio=values.get("refresh-ratio"),
        subject_token_type=values.get("subject-token-type"),
        token_params=values.get("token-params"),
    )
