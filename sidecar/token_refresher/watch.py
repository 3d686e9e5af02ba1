"""Noticing that a person fixed a credential, so a permanent error is retried at once.

After `invalid_client` or `invalid_grant` only a person can help, and what they change
is a Secret: the client secret, the private key or the bootstrap refresh token. The
kubelet then swaps the volume's `..data` symlink to a new directory, so the path we read
resolves to a new file. While waiting after a permanent error the refresher asks
`changed()` every `POLL_INTERVAL` seconds: a `stat` of each file, and a read only when
the stat differs. Polling a few files once a second, and only then, costs less than an
inotify dependency and works on every volume type. A change means different *content*:
the kubelet swaps every file of a Secret when any of its keys changes, and a file whose
content stayed the same must not cost the IdP a futile request.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .settings import Settings

__all__ = ["POLL_INTERVAL", "CredentialWatch", "watched_files"]

POLL_INTERVAL = 1.0  # seconds between looks while waiting after a permanent error

_Stamp = tuple[int, int, int, int]  # device, inode, size, mtime in ns


@dataclass
class _Seen:
    stamp: _Stamp | None
    digest: str | None


def watched_files(settings: Settings) -> list[Path]:
    """The credential files a person replaces to fix a permanent error."""
    fields = (settings.client_secret_file, settings.private_key_file, settings.refresh_token_file)
    return [path for path in fields if path is not None]


class CredentialWatch:
    """What the credential files held at the last `snapshot()`, and whether that changed."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = tuple(paths)
        self._seen: dict[Path, _Seen] = {}

    def snapshot(self) -> None:
        """Remember the files as they are now: called before each attempt reads them."""
        self._seen = {path: _Seen(_stamp(path), _digest(path)) for path in self.paths}

    def changed(self) -> Path | None:
        """The first file whose content differs from the snapshot, or None."""
        for path in self.paths:
            seen = self._seen.setdefault(path, _Seen(None, None))
            stamp = _stamp(path)
            if stamp == seen.stamp:
                continue
            seen.stamp = stamp
            digest = _digest(path)
            if digest != seen.digest:
                seen.digest = digest
                return path
        return None


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = os.stat(path)  # follows the ..data symlink to the file it points at now
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _digest(path: Path) -> str | None:
    # A digest, not the content: the snapshot must not be one more copy of a secret.
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
