"""Pod annotations (`token-refresher.io/...`) merged over cluster defaults, and checked.

This is the user's side of the webhook: every message here ends up in front of a person
whose `kubectl apply` was just denied, so each one names the annotation, says what is
allowed and echoes what it got. Annotations never hold secrets (they only *name* a
Secret and a key), so echoing them is safe.

The keys, each one's check and default come from the table in `keys.py`; this module
adds what is about the pod as a whole (token names and counts, file clashes, container
names) and needs no knowledge of the sidecar's settings model. Whether
the whole combination makes a working sidecar is decided by the sidecar's own model in
`patch`, so the two can never disagree. A key suffixed `.<name>` sets that setting for
the named token `<name>` (issue 17); the unsuffixed keys are the default token, as ever.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Collection, Mapping

from token_refresher.settings import DEFAULT_TOKEN, MAX_TOKENS, TOKEN_NAME
from token_refresher_operator.annotation_checks import SecretRef, container_list
from token_refresher_operator.errors import AnnotationError
from token_refresher_operator.keys import (
    BY_NAME,
    DEFAULT_FILE,
    DEFAULT_FORMAT,
    DEFAULT_MOUNT_PATH,
    KEYS,
    MARKERS,
    PER_TOKEN_KEYS,
    TABLE,
)
from token_refresher_operator.spec import InjectionSpec, NamedToken

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

# Long enough for any issuer URL or scope list seen in the wild; short enough that a
# pasted PEM or a token (which never belongs in an annotation) is refused on sight.
MAX_VALUE_LENGTH = 2048

# Mutating webhooks see a pod before the apiserver validates it, so an annotation *name*
# can be any length there; a denial echoes at most this much of an unknown one.
_SHOWN_KEY_LENGTH = 100

# The unnamed token's name in metrics, /status, reports and logs, so no named token's;
# the limit of 8 tokens per pod and the form of a name are the sidecar's too.
RESERVED_TOKEN = DEFAULT_TOKEN


def annotation(key: str) -> str:
    """The full annotation name for a key: `grant` -> `token-refresher.io/grant`."""
    return PREFIX + key


def wants_injection(annotations: Mapping[str, str] | None) -> bool:
    """Only the pod's own annotation opts in: a cluster default cannot inject everything."""
    return (annotations or {}).get(INJECT) == "true"


def merge(*, annotations: Mapping[str, str] | None, defaults: Mapping[str, str]) -> dict[str, str]:
    """Pod annotations (prefix stripped) over the cluster defaults.

    An empty annotation value means "not set": it removes a cluster default rather than
    setting an empty one, which is how a pod opts out of, say, a default scope.
    """
    merged = {key: value for key, value in defaults.items() if key not in MARKERS}
    for name, value in (annotations or {}).items():
        if name.startswith(PREFIX):
            merged[name[len(PREFIX) :]] = value
    return {key: value for key, value in merged.items() if value != ""}


_UNKNOWN = "unknown setting; known: " + ", ".join(sorted(KEYS - MARKERS))


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
        if key in MARKERS:
            continue
        if len(value) > MAX_VALUE_LENGTH:
            problems.append(
                f"{name(key)}: must be at most {MAX_VALUE_LENGTH} characters (got {len(value)})"
            )
            continue
        problem = BY_NAME[setting].check(value)
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
        selected = container_list(values["containers"])
        known = [*containers, *init_containers]
        for wanted in selected or ():
            if wanted not in known:
                problems.append(
                    f"{annotation('containers')}: no container named {wanted!r} in the pod "
                    # Escaped: before the apiserver validates the pod, a name can hold
                    # anything, and a denial stays one line.
                    f"(it has: {', '.join(repr(name)[1:-1] for name in known)})"
                )
    if problems:
        raise AnnotationError(problems)

    tokens = tuple(
        NamedToken(name=token, settings=named[token], file=named[token].get("file", token))
        for token in sorted(named)
    )
    settings: dict[str, str] = {}
    for key in TABLE:
        value = values.get(key.name, key.default)
        if value is not None and not key.marker and key.name != "containers":
            settings[key.name] = value
    settings["mount-path"] = posixpath.normpath(settings["mount-path"])
    return InjectionSpec(values=settings, containers=selected, tokens=tokens)
