"""token-refresher: keeps an OAuth2/OIDC access token fresh in a file for the app beside it.

The sidecar fetches a token from an identity provider, refreshes it well ahead of expiry
with jitter, retries outages with backoff, writes it atomically and never serves an
expired one. Configuration is `Settings` (env prefix `TOKEN_REFRESHER_`); the loop is
`Refresher`, its endpoints `StatusServer`, the whole daemon `serve`.
"""

from .cli import main, serve
from .clock import Clock, SystemClock
from .errors import (
    ConfigError,
    CoordinationError,
    CredentialError,
    DiscoveryError,
    IdPError,
    OutputError,
    TokenEndpointError,
    TokenRefresherError,
)
from .metrics import Metrics
from .refresher import Refresher
from .report import Reporter
from .server import StatusServer
from .settings import ClientAuth, Grant, Settings, config_errors
from .tokens import Token

__all__ = [
    "ClientAuth",
    "Clock",
    "ConfigError",
    "CoordinationError",
    "CredentialError",
    "DiscoveryError",
    "Grant",
    "IdPError",
    "Metrics",
    "OutputError",
    "Refresher",
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
