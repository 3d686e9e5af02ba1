"""The rendered env checked by the sidecar's own settings model, in annotation words.

A pod is denied at admission for exactly the reasons the sidecar would refuse to start:
`check_env` validates the env `sidecarenv.render_env` made with
`token_refresher.settings.Settings`, and names each problem by the annotation that sets
its field (`keys.ANNOTATION_OF`); what no annotation sets is the cluster configuration's
doing and says so. The verdict is cached per distinct env, so a Deployment's pods pay
for one validation.
"""

from __future__ import annotations

import functools

from pydantic import ValidationError

from token_refresher.problems import FieldPath, Problem, config_problems, env_field_name
from token_refresher.settings import Settings
from token_refresher_operator.annotations import (
    annotation,
)
from token_refresher_operator.errors import AnnotationError
from token_refresher_operator.keys import ANNOTATION_OF
from token_refresher_operator.manifests import (
    EnvVar,
)

__all__ = ["annotation_line", "check_env"]

# Values for downward-API env while validating: the real ones exist only on the node.
_PLACEHOLDER = "validating"


def _key_of(path: FieldPath) -> str | None:
    """The annotation key that sets a sidecar settings field (`audience`,
    `audience.payments`), if a pod's author can set it."""
    if path[0] == "tokens":
        if len(path) < 3 or path[2] not in ANNOTATION_OF:
            return None
        return f"{ANNOTATION_OF[path[2]]}.{path[1]}"
    return ANNOTATION_OF.get(path[0])


def _annotation_name(path: FieldPath) -> str:
    """The operator's name of a sidecar settings field: the annotation that sets it,
    else the sidecar's env var name, which only the cluster's configuration sets."""
    if len(path) == 2 and path[0] == "tokens":
        return f"token {path[1]}"
    key = _key_of(path)
    return env_field_name(path) if key is None else annotation(key)


def annotation_line(problem: Problem) -> str:
    if all(_key_of(field) is None for field in problem.fields()):
        # Nothing the pod's author wrote: the operator rendered something the sidecar
        # refuses, which only the cluster's configuration can fix.
        return f"token-refresher operator configuration: {problem.render(_annotation_name)}"
    return problem.render(_annotation_name)


def check_env(env: list[EnvVar]) -> Settings:
    """Validate rendered env with the sidecar's model; AnnotationError in annotation terms."""
    verdict = _validated(tuple((var["name"], var.get("value", _PLACEHOLDER)) for var in env))
    if isinstance(verdict, tuple):
        raise AnnotationError(list(verdict))
    return verdict


# The pods of one Deployment (one template) render the same env, and validating it with
# pydantic-settings costs ~1.3 ms, most of the webhook's time per pod: remember the
# verdicts of the last few distinct envs. The model reads nothing but the env it is given.
@functools.lru_cache(maxsize=64)
def _validated(flat: tuple[tuple[str, str], ...]) -> Settings | tuple[str, ...]:
    try:
        return Settings.from_env(dict(flat))
    except ValidationError as exc:
        return tuple(annotation_line(problem) for problem in config_problems(exc))
