"""Named tokens (issue 17): each one's settings, inherited from the default token.

`TOKEN_REFRESHER_TOKENS`, a JSON object `{name: {setting: value}}`, adds tokens that
inherit every setting they do not override from the default (unnamed) token, with two
limits that keep secrets where they belong: credentials are inherited only by a token
that talks to the same IdP, and a refresh token never (two tokens presenting one
rotating refresh token would each replay the one the other had rotated away, and IdPs
with reuse detection revoke the whole family for it). `named_tokens` builds them and
says, as `Problem`s under `("tokens", <name>, <field>)`, what is wrong with them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import AnyHttpUrl, ValidationError

from .problems import DEFAULT_TOKEN, FieldPath, Problem, config_problems

if TYPE_CHECKING:
    from .settings import Settings

__all__ = [
    "CREDENTIAL_FIELDS",
    "MAX_TOKENS",
    "PROCESS_FIELDS",
    "TOKEN_FIELDS",
    "TOKEN_NAME",
    "named_tokens",
]

# The name is a DNS-1123 label: it becomes a file name, a metrics label and,
# upper-cased, part of an env var name (TOKEN_FILE_<NAME>).
TOKEN_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_TOKENS = 8  # per sidecar, the default one included
# What a named token may set; the rest (PROCESS_FIELDS) belongs to the whole process.
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
# Settings of the whole process that a named token carries unchanged from the default.
PROCESS_FIELDS = frozenset(
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
# Never inherited, even at the same IdP: a refresh token can be presented by one token only.
_OWN_FIELDS = frozenset({"refresh_token_file", "family_secret"})


def named_tokens(default: Settings) -> tuple[dict[str, Settings], list[Problem]]:
    """Every named token of `default.tokens` built, in the order written, and what is
    wrong with them (then the dict is incomplete)."""
    problems: list[Problem] = []
    raw = default.tokens
    if len(raw) > MAX_TOKENS - 1:
        problems.append(
            Problem(
                ("tokens",),
                f"at most {MAX_TOKENS} tokens per sidecar, the default one included, so at "
                f"most {MAX_TOKENS - 1} named tokens, not {len(raw)}",
            )
        )
    named: dict[str, Settings] = {}
    for name, overrides in raw.items():
        found = _name_problems(name, overrides)
        if not found:
            built = _named_token(default, name, overrides)
            if not isinstance(built, list):
                named[name] = built
                continue
            found = built
        problems.extend(found)
    if not problems:
        problems = _collisions({DEFAULT_TOKEN: default, **named})
    return named, problems


def _path(token: str, field: str) -> FieldPath:
    return (field,) if token == DEFAULT_TOKEN else ("tokens", token, field)


def _named_token(
    default: Settings, name: str, overrides: dict[str, Any]
) -> Settings | list[Problem]:
    """The named token's settings: the default's, its own on top."""
    own = {key.lower(): _as_env_value(value) for key, value in overrides.items()}
    base = default.model_dump(include=set(TOKEN_FIELDS | PROCESS_FIELDS))
    same_idp = all(
        key not in own or _same_url(own[key], getattr(default, key))
        for key in ("issuer", "token_url")
    )
    not_inherited = set(_OWN_FIELDS)
    if not same_idp:
        # Another IdP: neither the default's credentials nor the other half of its
        # address (an issuer with the default's token_url would still send the request
        # to the default's endpoint).
        not_inherited |= CREDENTIAL_FIELDS | {"issuer", "token_url"}
    for key in not_inherited:
        base[key] = None
    base["output"] = default.output.parent / name
    base["state_file"] = (
        None if default.state_file is None else Path(f"{default.state_file}.{name}")
    )
    # Every field is given explicitly, and an empty `tokens` ends the recursion.
    base["tokens"] = {}
    try:
        return type(default).from_values({**base, **own})
    except ValidationError as exc:
        problems = config_problems(exc)
    return [_about_token(problem, name, not_inherited - own.keys()) for problem in problems]


def _about_token(problem: Problem, token: str, not_inherited: set[str]) -> Problem:
    """A problem of the default token's model, about a named token: its fields, and why
    a credential it lacks was not inherited."""

    def scoped(path: FieldPath) -> FieldPath:
        return ("tokens", token, *path) if path and path[0] in TOKEN_FIELDS else path

    message = problem.message
    field = problem.field[0] if problem.field else ""
    if not problem.alternatives and field in not_inherited and "required" in message:
        why = (
            "a refresh token is never shared between tokens"
            if field in _OWN_FIELDS
            else "it names another IdP than the default token, so it does not inherit "
            "the default's credentials"
        )
        message += f" (not inherited: {why})"
    return Problem(
        scoped(problem.field),
        message,
        tuple(scoped(ref) for ref in problem.refs),
        tuple(scoped(alt) for alt in problem.alternatives),
    )


def _name_problems(name: str, overrides: Any) -> list[Problem]:
    """What is wrong with a named token's name and the shape of its settings."""
    where = ("tokens", name)
    if name == DEFAULT_TOKEN:
        return [Problem(where, "'default' is the name of the unnamed token; choose another name")]
    if len(name) > 63 or not TOKEN_NAME.fullmatch(name):
        return [
            Problem(
                where,
                "a token name must be a DNS label: at most 63 lower-case letters, digits "
                "and '-', starting and ending with a letter or digit",
            )
        ]
    if not isinstance(overrides, dict):
        return [Problem(where, 'must be a JSON object of settings, e.g. {"audience": "api"}')]
    problems: list[Problem] = []
    seen: set[str] = set()
    for key, value in overrides.items():
        field = key.lower()
        path = (*where, field)
        if field in seen:
            problems.append(Problem(path, "set twice"))
        seen.add(field)
        if field in PROCESS_FIELDS or field in ("tokens", "tokens_file"):
            problems.append(
                Problem(
                    path,
                    "not a per-token setting; it is set once for the whole sidecar ({0})",
                    ((field,),),
                )
            )
        elif field not in TOKEN_FIELDS:
            problems.append(Problem(path, "not a setting"))
        elif isinstance(value, bool) or not isinstance(value, str | int | float):
            problems.append(Problem(path, "must be a string or a number"))
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


def _collisions(tokens: Mapping[str, Settings]) -> list[Problem]:
    """Two tokens writing one file would overwrite each other's token or refresh token."""
    problems: list[Problem] = []
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
                    Problem(
                        _path(name, field),
                        f"{path} is also the {other_field.replace('_', ' ')} of token "
                        f"{other} ({{0}}); two tokens may not share a file",
                        (_path(other, other_field),),
                    )
                )
            else:
                used[key] = (name, field)
    return problems
