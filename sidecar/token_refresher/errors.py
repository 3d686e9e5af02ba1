"""The exceptions token-refresher raises, and how a failure is classified for retrying.

Our exception hierarchy:

* TokenRefresherError
  + ConfigError        - a setting or a configured file is unusable; exit code 2
  + CredentialError    - a credential file (secret, key, token) could not be read now
  + IdPError           - the identity provider did not give us a usable answer
    - DiscoveryError       - /.well-known/openid-configuration was unusable
    - TokenEndpointError   - the token endpoint refused, failed, or answered garbage
  + OutputError        - the token file could not be written or removed
  + CoordinationError  - the family Secret shared with other replicas could not be used

Every message is a plain sentence naming the object and the cause. None of them ever
carries a token, a secret, an assertion or a refresh token: they end up in logs, in
`/status` and in pod Events, which far more people can read than the credentials.
"""

from __future__ import annotations

__all__ = [
    "PERMANENT_OAUTH_ERRORS",
    "ConfigError",
    "CoordinationError",
    "CredentialError",
    "DiscoveryError",
    "IdPError",
    "OutputError",
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


class ConfigError(TokenRefresherError):
    """The configuration cannot work; `lines` holds one problem per line."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class CredentialError(TokenRefresherError):
    """A credential could not be read or is not usable now.

    Transient by default, since kubelet may be half-way through rotating the file;
    permanent when only a person can fix it (a refresh token the IdP rejected).
    """

    def __init__(
        self, message: str, *, error: str = "credential_unreadable", permanent: bool = False
    ) -> None:
        super().__init__(message)
        self.error = error
        self.description: str | None = None
        self.permanent = permanent
        self.retry_after: float | None = None


class IdPError(TokenRefresherError):
    """The identity provider's answer was an error or unusable.

    `error` is the OAuth error code (RFC 6749 section 5.2) when the IdP sent one, else a
    short class such as `http_503`, `timeout`, `connect_error` or `invalid_response`:
    it goes into reports and metrics, so it must stay low-cardinality.
    """

    def __init__(
        self,
        message: str,
        *,
        error: str,
        description: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        permanent: bool = False,
    ) -> None:
        super().__init__(message)
        self.error = error
        self.description = description
        self.status = status
        self.retry_after = retry_after
        self.permanent = permanent


class DiscoveryError(IdPError):
    """OIDC discovery failed: no usable token_endpoint from the issuer."""


class TokenEndpointError(IdPError):
    """The token endpoint did not give us a token."""


class OutputError(TokenRefresherError):
    """Writing or removing the token file failed; the previous file is untouched."""


class CoordinationError(TokenRefresherError):
    """The token family's Secret could not be read or written through the kube-apiserver.

    `error` is a short class for reports and metrics: `forbidden` (a missing RBAC grant,
    named in the message), `not_found`, `unauthorized`, `apiserver_unavailable`,
    `config_error`, `credential_unreadable`, `waiting_for_holder`, or `invalid_grant`
    (the IdP rejected the family). Permanent when only a person can fix it.
    """

    def __init__(
        self,
        message: str,
        *,
        error: str,
        permanent: bool = False,
        description: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.error = error
        self.description = description
        self.status = status
        self.permanent = permanent
        self.retry_after: float | None = None
