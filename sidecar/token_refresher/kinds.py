"""The kinds of grant and client authentication the sidecar knows, by their setting values.

Their own module because three readers need them and none should import another for
them: the settings model, the checks of how settings combine (`combinations`), and the
operator's annotation table.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ClientAuth", "Grant"]


class Grant(StrEnum):
    CLIENT_CREDENTIALS = "client_credentials"
    REFRESH_TOKEN = "refresh_token"
    TOKEN_EXCHANGE = "token_exchange"  # RFC 8693
    JWT_BEARER = "jwt_bearer"  # RFC 7523 section 2.1


class ClientAuth(StrEnum):
    CLIENT_SECRET_BASIC = "client_secret_basic"
    CLIENT_SECRET_POST = "client_secret_post"
    PRIVATE_KEY_JWT = "private_key_jwt"
    SERVICE_ACCOUNT = "service_account"  # projected token as RFC 7523 client assertion
    NONE = "none"
