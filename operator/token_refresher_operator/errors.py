"""The exceptions the operator raises on purpose.

Our exception hierarchy:

* OperatorError
  + ConfigError      - the operator's own settings or CONFIG_FILE are unusable; exit code 2
  + AnnotationError  - a pod's token-refresher.io/ annotations are unusable; the pod is denied

Both carry `lines`, one problem per line, because a person fixing a manifest wants the
whole list at once rather than one complaint per deploy. No message ever carries a secret:
annotations only *name* Secrets, and the operator never reads one.
"""

from __future__ import annotations

__all__ = ["AnnotationError", "ConfigError", "OperatorError"]


class OperatorError(Exception):
    """Base class of every error the operator raises on purpose."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class ConfigError(OperatorError):
    """The operator cannot start with this configuration; one problem per line."""


class AnnotationError(OperatorError):
    """A pod's annotations cannot be turned into a sidecar; one problem per line.

    Each line starts with the annotation it is about and says what is allowed, e.g.
    `token-refresher.io/grant: must be one of client_credentials, ... (got 'foo')`.
    """

    @property
    def operator_fault(self) -> bool:
        """Whether a line blames the cluster's configuration rather than the pod.

        patch.check_env words those lines so (the sidecar refused something the operator
        rendered from its own defaults); every other line is about the pod's author.
        """
        marker = "token-refresher operator configuration:"
        return any(line.startswith(marker) for line in self.lines)

    @property
    def message(self) -> str:
        # The admission response carries a single status message; kubectl prints it
        # after "denied the request: ", so keep it on one line.
        return "; ".join(self.lines)
