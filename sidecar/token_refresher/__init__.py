"""token-refresher: keeps an OAuth2/OIDC access token fresh in a file for the app beside it.

The sidecar fetches a token from an identity provider, refreshes it well ahead of expiry
with jitter, retries outages with backoff, writes it atomically and never serves an
expired one. Configuration is `Settings` (env prefix `TOKEN_REFRESHER_`).
"""

from .settings import ClientAuth, Grant, Settings, config_errors

__all__ = ["ClientAuth", "Grant", "Settings", "config_errors"]
