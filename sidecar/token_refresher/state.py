"""Where the current refresh token lives, so rotation survives a container restart.

IdPs that rotate refresh tokens (oidc-provider's `rotateRefreshToken`, Dex, Okta)
invalidate the old one as soon as the new one is issued — and some revoke the whole
chain when an old one is replayed. So a rotated token is written to the state file
(mode 0600, atomically) *before* the refresher relies on it, and on start the state file
wins over the bootstrap file (REFRESH_TOKEN_FILE, usually a Secret). The one exception:
when the bootstrap file's content changed since we bootstrapped from it, a person put a
new refresh token there on purpose (say, after the old chain died), and it is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from .credentials import CredentialFile
from .errors import CredentialError, OutputError
from .redact import redactor
from .writer import atomic_write

__all__ = ["RefreshTokenStore"]

_STATE_MODE = 0o600


def _fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class RefreshTokenStore:
    """The current refresh token: loaded from state or bootstrap, saved on rotation."""

    def __init__(self, state_file: Path, bootstrap_file: Path | None) -> None:
        self.state_file = state_file
        self._bootstrap = (
            CredentialFile(bootstrap_file, what="refresh token") if bootstrap_file else None
        )
        self._current: str | None = None
        self._bootstrap_fingerprint: str | None = None

    @property
    def current(self) -> str | None:
        return self._current

    def load(self) -> str | None:
        """The refresh token to use now, or None when there is none left to try."""
        state = self._read_state()
        bootstrap = self._read_bootstrap()
        if state is not None and (bootstrap is None or _fingerprint(bootstrap) == state[1]):
            # The bootstrap was consumed already: the state file knows what came after
            # it, including "nothing usable" after the IdP rejected the chain.
            self._current, self._bootstrap_fingerprint = state
        elif bootstrap is not None:
            self._current, self._bootstrap_fingerprint = bootstrap, _fingerprint(bootstrap)
        else:
            self._current = None
        return self._current

    def save(self, refresh_token: str) -> None:
        """Persist a rotated refresh token; OutputError if it could only be kept in memory."""
        redactor.add(refresh_token)
        if refresh_token == self._current:
            return
        # Memory first: the IdP has already invalidated the old token, so even when the
        # disk refuses, this one is the only one that still works.
        self._current = refresh_token
        self._write()

    def discard(self) -> None:
        """Forget a refresh token the IdP rejected, so no restart replays it."""
        self._current = None
        # At worst, a restart retries the rejected token once more.
        with contextlib.suppress(OutputError):
            self._write()

    def _write(self) -> None:
        document = {
            "refresh_token": self._current,
            "bootstrap_sha256": self._bootstrap_fingerprint,
        }
        atomic_write(self.state_file, json.dumps(document).encode("utf-8"), _STATE_MODE)

    def _read_state(self) -> tuple[str | None, str | None] | None:
        try:
            document = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        if not isinstance(document, dict):
            return None
        token = document.get("refresh_token")
        fingerprint = document.get("bootstrap_sha256")
        token = token if isinstance(token, str) and token else None
        redactor.add(token)
        return token, fingerprint if isinstance(fingerprint, str) else None

    def _read_bootstrap(self) -> str | None:
        if self._bootstrap is None:
            return None
        try:
            return self._bootstrap.read()
        except CredentialError:
            return None
