"""Credential-looking strings in text: what the leak checks look for.

Every test doubles as a leak test (tests/conftest.py checks each log record), and the
end-to-end tests check what the app and the pods' logs showed: a JWT, or one of the test
IdPs' client secrets and user password, must never appear.
"""

from __future__ import annotations

import re

__all__ = ["secrets_in"]

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_TEST_SECRETS = (
    "client-basic-secret",
    "client-post-secret",
    "dex-basic-secret",
    "dex-post-secret",
    "alice-password",
)


def secrets_in(text: str) -> list[str]:
    """Credential-looking strings in `text` (abridged, so a failure does not leak them)."""
    found = [m.group(0)[:12] + "…" for m in _JWT.finditer(text)]
    found += [s[:6] + "…" for s in _TEST_SECRETS if s in text]
    return found
