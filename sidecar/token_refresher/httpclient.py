"""The HTTP client a token's requests to its identity provider go through.

One place decides how the sidecar talks to an IdP: the token's CA bundle (or the
system's), its TIMEOUT, and a User-Agent that names us in the IdP's logs. `Refresher`
makes one per token unless given one; `Refreshers` shares one between the tokens that
trust the same CA bundle.
"""

from __future__ import annotations

import httpx2

from .credentials import ssl_context
from .settings import Settings

__all__ = ["USER_AGENT", "new_client"]

USER_AGENT = "token-refresher"


def new_client(
    settings: Settings,
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
    timeout: float | None = None,
) -> httpx2.AsyncClient:
    """An httpx2 client for the IdP of `settings`: its CA bundle, its timeout.

    `IdP` bounds each exchange with the token's own TIMEOUT, so a client shared by tokens
    of one CA bundle (`Refreshers`) is given the longest of theirs.
    """
    return httpx2.AsyncClient(
        transport=transport,
        verify=ssl_context(cafile=settings.ca_file),
        timeout=timeout or settings.timeout,
        headers={"User-Agent": USER_AGENT},
    )
