"""The exceptions token-refresher raises, and how a failure is classified for retrying.

Our exception hierarchy:

* TokenRefresherError
  + RefreshFailure     - one attempt failed; carries `error` and `permanent` for retrying
    - CredentialError    - a credential file (secret, key, token) could not be read now
    - IdPError           - the identity provider did not give us a usable answer
      . DiscoveryError       - /.well-known/openid-configuration was unusable
      . TokenEndpointError   - the token endpoint refused, failed, or answered garbage
    - OutputError        - the token file could not be written or removed
    - CoordinationError  - the family Secret shared with other replicas could not be used

A wrong setting is not an exception here: `Settings` validation reports it (see
`settings.config_problems`) and the CLI exits 2. Every message is a plain sentence naming
the object and the cause. None of them ever carries a token, a secret, an assertion or a
refresh token: they end up in logs, in `/status` and in pod Events, which far more people
can read than the credentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

__all__ = [
    "PERMANENT_OAUTH_ERRORS",
    "CoordinationError",
    "CredentialError",
    "DiscoveryError",
    "IdPError",
    "OutputError",
    "RefreshFailure",
    "TokenEndpointError",
    "TokenRefresherError",
]

# RFC 6749 section 5.2 errors that retrying cannot fix: only a person changing the
# client registration, the secret or the refresh token can. Everything else (5xx,
# timeouts, garbage bodies, temporarily_unavailable) is transient.
PERMANENT_OAUTH_ERRORS = frozenset(
    {"invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type"}
)


class TokenRefresherError(Exception):
    """Base class of every error token-refresher raises on purpose."""


class RefreshFailure(TokenRefresherError):
    """One attempt at a token failed; what the retry schedule and reports need to know.

    `error` is a short, low-cardinality class for reports and metrics; `permanent` says
    only a person can fix it (the retry then waits longer, and a credential change wakes
    it); `retry_after` is the IdP's Retry-After in seconds, if it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        error: str,
        permanent: bool = False,
        description: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.error = error
        self.permanent = permanent
        self.description = description
        self.status = status
        self.retry_after = retry_after


class CredentialError(RefreshFailure):
    """A credential could not be read or is not usable now.

    Transient by default, since kubelet may be half-way through rotating the file;
    permanent when only a person can fix it (a refresh token the IdP rejected).
    """

    def __init__(
        self, message: str, *, error: str = "credential_unreadable", permanent: bool = False
    ) -> None:
        super().__init__(message, error=error, permanent=permanent)


class IdPError(RefreshFailure):
    """The identity provider's answer was an error or unusable.

    `error` is the OAuth error code (RFC 6749 section 5.2) when the IdP sent one, else a
    short class such as `http_503`, `timeout`, `connect_error` or `invalid_response`:
    it goes into reports and metrics, so it must stay low-cardinality.
    """

    def with_hints(self, hints: Sequence[str]) -> Self:
        """The same failure, its message followed by `hints` (what may explain it)."""
        return type(self)(
            "; ".join([str(self), *hints]),
            error=self.error,
            permanent=self.permanent,
            description=self.description,
            status=self.status,
            retry_after=self.retry_after,
        )


class DiscoveryError(IdPError):
    """OIDC discovery failed: no usable token_endpoint from the issuer."""


class TokenEndpointError(IdPError):
    """The token endpoint did not give us a token."""


class OutputError(RefreshFailure):
    """Writing or removing the token file failed; the previous file is untouched."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error="output_error")


class CoordinationError(RefreshFailure):
    """The token family's Secret could not be read or written through the kube-apiserver.

    `error` is a short class for reports and metrics: `forbidden` (a missing RBAC grant,
    named in the message), `not_found`, `unauthorized`, `apiserver_unavailable`,
    `config_error`, `credential_unreadable`, `waiting_for_holder`, or `invalid_grant`
    (the IdP rejected the family). Permanent when only a person can fix it.
    """
