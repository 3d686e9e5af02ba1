"""Where the next token comes from: which grant to use, and what to do when it fails.

With a refresh token in hand (GRANT=refresh_token, or REFRESH_TOKEN_FILE beside another
grant) we use it first; when the IdP answers `invalid_grant`, the refresh token is dead
for good, so it is discarded — never replayed — and the configured grant is tried at
once if there is one. A rotated refresh token is persisted by `RefreshTokenStore`
before the next request can use it — or, when replicas share the token (FAMILY_SECRET),
by `FamilyMember` in the family Secret, which also decides whether this pod presents
the refresh token at all. Everything else here is plumbing: grant parameters
and client authentication from `grants`, the HTTP exchange from `idp`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import CredentialError, OutputError, TokenEndpointError
from .grants import Credentials, TokenRequestAuth
from .idp import IdP
from .logs import get_logger
from .redact import redactor
from .settings import ClientAuth, Grant, Settings
from .state import RefreshTokenStore
from .tokens import Token

if TYPE_CHECKING:
    from .holder import FamilyMember  # only with FAMILY_SECRET

__all__ = ["TokenSource"]

log = get_logger(__name__)


class TokenSource:
    """Fetches one token per call, choosing the grant; raises IdPError/CredentialError."""

    def __init__(
        self,
        settings: Settings,
        idp: IdP,
        credentials: Credentials,
        *,
        family: FamilyMember | None = None,
    ) -> None:
        self._settings = settings
        self._idp = idp
        self._credentials = credentials
        # A shared family keeps its refresh token in its Secret, not in this pod.
        self._family = family
        self._store = (
            RefreshTokenStore(settings.effective_state_file, settings.refresh_token_file)
            if family is None
            and (settings.grant is Grant.REFRESH_TOKEN or settings.refresh_token_file)
            else None
        )
        if self._store is not None:
            self._store.load()

    async def fetch(self) -> Token:
        if self._family is not None:
            return await self._family.fetch(self._refresh)
        store = self._store
        primary = self._settings.grant
        if store is not None:
            if store.current is None:
                store.load()  # a person may have put a new refresh token in place
            refresh_token = store.current
            if refresh_token is not None:
                try:
                    token = await self._request(Grant.REFRESH_TOKEN, refresh_token=refresh_token)
                except TokenEndpointError as exc:
                    if exc.error != "invalid_grant":
                        raise
                    store.discard()
                    if primary is Grant.REFRESH_TOKEN:
                        raise
                    log.warning(
                        "the refresh token was rejected (invalid_grant); falling back to "
                        f"the {primary} grant"
                    )
                else:
                    self._keep_refresh_token(token)
                    return token
            elif primary is Grant.REFRESH_TOKEN:
                raise CredentialError(
                    "no usable refresh token: the identity provider rejected the last one; "
                    f"put a new one in {self._settings.refresh_token_file}",
                    error="invalid_grant",
                    permanent=True,
                )
        token = await self._request(primary)
        self._keep_refresh_token(token)
        return token

    async def _refresh(self, refresh_token: str) -> Token:
        return await self._request(Grant.REFRESH_TOKEN, refresh_token=refresh_token)

    async def _request(self, grant: Grant, *, refresh_token: str | None = None) -> Token:
        url = await self._idp.token_endpoint()
        params = self._credentials.grant_params(grant, refresh_token=refresh_token)
        auth = self._credentials.client_auth(url)
        try:
            token = await self._idp.request_token(
                params, auth, token_exchange=grant is Grant.TOKEN_EXCHANGE
            )
        except TokenEndpointError as exc:
            hints = self._hints(exc.error, params["grant_type"], auth)
            if not hints:
                raise
            raise exc.with_hints(hints) from None
        redactor.add(token.access_token)
        redactor.add(token.refresh_token)
        return token

    def _hints(self, error: str, grant_type: str, auth: TokenRequestAuth | None) -> list[str]:
        """What may explain a refusal: the client authentication or grant the IdP's
        discovery did not list, and Basic credentials the form encoding changed."""
        hints: list[str | None] = []
        if error == "invalid_client":
            method = self._settings.effective_client_auth
            if method is not ClientAuth.SERVICE_ACCOUNT:  # a JWT assertion: no one name
                hints.append(
                    self._idp.not_advertised("token_endpoint_auth_methods_supported", method)
                )
            hints.append(auth.hint if auth is not None else None)
        elif error in ("unsupported_grant_type", "unauthorized_client"):
            hints.append(self._idp.not_advertised("grant_types_supported", grant_type))
        return [hint for hint in hints if hint]

    def _keep_refresh_token(self, token: Token) -> None:
        # A response without a refresh token keeps the previous one (RFC 6749 section 6).
        if self._store is None or token.refresh_token is None:
            return
        try:
            self._store.save(token.refresh_token)
        except OutputError as exc:
            log.error(
                f"cannot keep the rotated refresh token: {exc}; it is held in memory only, "
                "so a restart will need a new one",
            )
