"""token-refresher: keeps an OAuth2/OIDC access token fresh in a file for the app beside it.

The sidecar fetches a token from an identity provider, refreshes it well ahead of expiry
with jitter, retries outages with backoff, writes it atomically and never serves an
expired one. Configuration is `Settings` (env prefix `TOKEN_REFRESHER_`); the loop of one
token is `Refresher`, those of every token of the sidecar `Refreshers`, their endpoints
`StatusServer`, the whole daemon `serve`.
"""

from typing import TYPE_CHECKING

from .lazy import lazy_exports

if TYPE_CHECKING:
    from .cli import main, serve
    from .clock import Clock, SystemClock
    from .errors import (
        CoordinationError,
        CredentialError,
        DiscoveryError,
        IdPError,
        OutputError,
        RefreshFailure,
        TokenEndpointError,
        TokenRefresherError,
    )
    from .metrics import Metrics
    from .refresher import Refresher
    from .refreshers import Refreshers
    from .report import Reporter
    from .server import StatusServer
    from .settings import ClientAuth, Grant, Settings, config_errors
    from .tokens import Token

__all__ = [
    "ClientAuth",
    "Clock",
    "CoordinationError",
    "CredentialError",
    "DiscoveryError",
    "Grant",
    "IdPError",
    "Metrics",
    "OutputError",
    "RefreshFailure",
    "Refresher",
    "Refreshers",
    "Reporter",
    "Settings",
    "StatusServer",
    "SystemClock",
    "Token",
    "TokenEndpointError",
    "TokenRefresherError",
    "config_errors",
    "main",
    "serve",
]

# The public names are imported when first used (PEP 562), not with the package: the
# operator imports `token_refresher.settings` for the settings model alone, and the
# daemon imports only the parts its configuration needs (the family's Kubernetes client,
# the report client); each import a process does not make is memory it does not hold.
_MODULE_OF = {
    "ClientAuth": "settings",
    "Clock": "clock",
    "CoordinationError": "errors",
    "CredentialError": "errors",
    "DiscoveryError": "errors",
    "Grant": "settings",
    "IdPError": "errors",
    "Metrics": "metrics",
    "OutputError": "errors",
    "RefreshFailure": "errors",
    "Refresher": "refresher",
    "Refreshers": "refreshers",
    "Reporter": "report",
    "Settings": "settings",
    "StatusServer": "server",
    "SystemClock": "clock",
    "Token": "tokens",
    "TokenEndpointError": "errors",
    "TokenRefresherError": "errors",
    "config_errors": "settings",
    "main": "cli",
    "serve": "cli",
}


__getattr__ = lazy_exports(__name__, _MODULE_OF)
