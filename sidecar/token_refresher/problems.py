"""What is wrong with a configuration, as data: a field and a message, named by the caller.

Validation of `Settings` reports `Problem`s rather than finished lines, because two
readers name the same setting differently: the sidecar's CLI says
`TOKEN_REFRESHER_AUDIENCE` (`config_errors`), the operator's webhook says
`token-refresher.io/audience`. A problem's field is a path: `("audience",)` for the
default token, `("tokens", "payments", "audience")` for a named token's setting,
`("tokens", "payments")` for the token itself. A message that mentions another setting
holds `{0}`, `{1}`... where the caller's names of `refs` go, so no one has to find env var
names in a sentence and translate them back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import NamedTuple

from pydantic import ValidationError

__all__ = [
    "DEFAULT_TOKEN",
    "ENV_PREFIX",
    "FieldPath",
    "Problem",
    "Problems",
    "config_errors",
    "config_problems",
    "env_field_name",
    "env_name",
    "token_env_name",
]

ENV_PREFIX = "TOKEN_REFRESHER_"
DEFAULT_TOKEN = "default"  # the unnamed token, in labels, /status, reports and logs

FieldPath = tuple[str, ...]
_REF = re.compile(r"\{(\d+)\}")


class Problem(NamedTuple):
    """One thing wrong with the settings: `field`, and `message` saying what is allowed.

    `alternatives` are fields that would do instead (`ISSUER or TOKEN_URL: ...`); `refs`
    are the settings the message mentions as `{0}`, `{1}`...
    """

    field: FieldPath  # () only for a problem of the whole model
    message: str
    refs: tuple[FieldPath, ...] = ()
    alternatives: tuple[FieldPath, ...] = ()

    def render(self, name: Callable[[FieldPath], str]) -> str:
        """The line a person reads, with every field named by `name`."""
        message = self.message
        if self.refs:
            names = [name(ref) for ref in self.refs]
            message = _REF.sub(lambda m: names[int(m.group(1))], message)
        if not self.field:  # about the whole model, which pydantic names no field of
            return message
        head = " or ".join(name(field) for field in (self.field, *self.alternatives))
        return f"{head}: {message}"

    def fields(self) -> Iterable[FieldPath]:
        """Every field the line names."""
        return tuple(f for f in (self.field, *self.alternatives, *self.refs) if f)


class Problems(ValueError):
    """Raised by the model's validators: pydantic keeps it in the error's context, where
    `config_problems` finds the problems again."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(problem.render(env_field_name) for problem in problems))
        self.problems = problems


def env_name(field: str) -> str:
    """The environment variable that sets a settings field."""
    return ENV_PREFIX + field.upper()


def token_env_name(token: str, field: str | None = None) -> str:
    """How error lines name a setting of a named token (or the token itself), e.g.
    `TOKEN_REFRESHER_TOKENS__PAYMENTS__AUDIENCE`; for the default token, `env_name`."""
    if token == DEFAULT_TOKEN and field is not None:
        return env_name(field)
    name = f"{ENV_PREFIX}TOKENS__{token.upper()}"
    return name if field is None else f"{name}__{field.upper()}"


def env_field_name(path: FieldPath) -> str:
    """The sidecar's name of a field path: the env var (or the named token's part of
    TOKEN_REFRESHER_TOKENS) that sets it."""
    if len(path) > 1 and path[0] == "tokens":
        return token_env_name(path[1], path[2] if len(path) > 2 else None)
    return env_name(path[0])


def config_problems(exc: ValidationError) -> list[Problem]:
    """One problem per wrong setting, from a failed `Settings` validation."""
    problems: list[Problem] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = err.get("loc", ())
        ctx = err.get("ctx") or {}
        if isinstance(ctx.get("error"), Problems):
            problems.extend(ctx["error"].problems)
            continue
        msg = str(err.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err.get("type") in ("enum", "literal_error") and "expected" in ctx:
            msg = f"must be one of {ctx['expected']}"
        problems.append(Problem((str(loc[0]),) if loc else (), msg))
    return problems


def config_errors(exc: ValidationError) -> list[str]:
    """One plain line per wrong setting, naming the env var and what is allowed."""
    return [problem.render(env_field_name) for problem in config_problems(exc)]
