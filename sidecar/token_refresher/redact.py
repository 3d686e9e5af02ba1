"""The guard that keeps credentials out of every line we print.

Messages are written not to contain secrets in the first place; this is the second
line of defence for the day someone logs an exception from a library that echoes a
request body. Every credential the refresher reads or receives is registered here, and
`scrub` replaces it — and anything shaped like a JWT — before a log line, a `/status`
field or a report leaves the process.
"""

from __future__ import annotations

import re
from collections import deque

__all__ = ["REDACTED", "Redactor", "redactor"]

REDACTED = "[redacted]"

# header.payload.signature of a JWS: base64url parts, the first two starting with "eyJ"
# ('{"'). Unregistered tokens (someone else's, an old one) are caught by their shape.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")

# Values shorter than this are not registered: scrubbing "a" out of every message would
# ruin the logs without protecting anything a brute force would not find anyway.
_MIN_SECRET_LENGTH = 6


class Redactor:
    """Remembers the most recent secret values and blanks them out of text."""

    def __init__(self, capacity: int = 32) -> None:
        # Bounded: tokens rotate for the life of the pod, memory must not grow with them.
        self._secrets: deque[str] = deque(maxlen=capacity)

    def add(self, secret: str | None) -> None:
        if secret is None:
            return
        secret = secret.strip()
        if len(secret) >= _MIN_SECRET_LENGTH and secret not in self._secrets:
            self._secrets.append(secret)

    def scrub(self, text: str) -> str:
        # Longest first, so a secret containing another is blanked whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _JWT.sub(REDACTED, text)


redactor = Redactor()
