"""The token file: rendered, written atomically, removed on expiry, adopted on restart.

Apps read the file whenever they like, so it must never be seen half-written: we write
a temporary file in the same directory, fsync it, set its mode, rename it over the old
one (atomic on POSIX within one filesystem) and fsync the directory so the rename
survives a crash. The mode is applied on every write, not left to the umask, so apps
running under another UID can read it (FILE_MODE 0444 on a volume only this pod
mounts). A failed write leaves the previous file as it was.

The writer also remembers what it put on disk, so the refresher can tell when someone
else deleted or replaced the file (`TokenWriter.lost`) and put it back (`restore`),
and it removes the temporary files a killed predecessor left (`remove_temporaries`):
on a 1 MiB emptyDir, every SIGKILL mid-write would otherwise leave one for good.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from .errors import OutputError
from .expiry import jwt_claims
from .tokens import Token

__all__ = [
    "TokenWriter",
    "atomic_write",
    "read_expiry",
    "remove_temporaries",
    "render",
    "rfc3339",
]

# What an errno means to the person reading the log, in their terms.
_REASONS = {
    errno.ENOSPC: "no space left on the volume",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the volume is mounted read-only",
    errno.EACCES: "permission denied (check the volume's owner and fsGroup)",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "the directory does not exist",
    errno.EISDIR: "a directory is in the way",
}


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(token: Token, fmt: Literal["raw", "json"], *, now: float) -> bytes:
    """The file content: the token alone (no newline: `$(cat token)` must be exact) or JSON."""
    if fmt == "raw":
        return token.access_token.encode("utf-8")
    document = {
        "access_token": token.access_token,
        "token_type": token.token_type,
        "expires_at": rfc3339(token.expires_wall),
        "expires_in": max(0, int(token.expires_wall - now)),
        "scope": token.scope,
    }
    return json.dumps(document, indent=2).encode("utf-8") + b"\n"


def _reason(exc: OSError) -> str:
    return _REASONS.get(exc.errno or 0) or exc.strerror or type(exc).__name__


# What tells our file from one someone else put in its place: the inode, and the size
# and mtime in case it was rewritten in place.
_Identity = tuple[int, int, int, int]


def _identity(st: os.stat_result) -> _Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def atomic_write(path: Path, data: bytes, mode: int) -> _Identity:
    """Replace `path` with `data` atomically, with `mode`; OutputError on failure.

    Returns the identity of the file written (see `TokenWriter.lost`).
    """
    directory = path.parent
    _ensure_directory(directory)
    tmp = directory / f"{_temporary_prefix(path)}{secrets.token_hex(4)}"
    try:
        # 0600 while we write: the final mode is set once the content is complete.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
            os.fchmod(fd, mode)
            identity = _identity(os.fstat(fd))  # a rename keeps inode, size and mtime
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc
    _fsync_directory(directory)
    return identity


def remove_temporaries(path: Path) -> int:
    """Remove the temporary files `atomic_write` left beside `path` when its process was
    killed mid-write; how many. Only for use before this process writes `path`."""
    prefix = _temporary_prefix(path)
    removed = 0
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed += 1
    return removed


def _ensure_directory(directory: Path) -> None:
    # Recreate the directory if only it is missing (someone rm -rf'd it inside the
    # volume); a missing parent means the volume is not mounted where we think, and
    # creating a tree there would hide that mistake.
    if directory.is_dir():
        return
    try:
        directory.mkdir(mode=0o755)
    except FileExistsError:
        if not directory.is_dir():
            raise OutputError(f"cannot write into {directory}: it is not a directory") from None
    except OSError as exc:
        raise OutputError(
            f"cannot create the output directory {directory}: {_reason(exc)}"
            + (
                " (its parent is missing: is the volume mounted?)"
                if exc.errno == errno.ENOENT
                else ""
            )
        ) from exc


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # some filesystems refuse; the rename already happened
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def read_expiry(path: Path, fmt: Literal["raw", "json"]) -> float | None:
    """The wall-clock expiry of a token file left by a previous run, if it can be told."""
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if fmt == "json":
        try:
            expires_at = json.loads(content)["expires_at"]
            return (
                datetime.strptime(expires_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
            )
        except (ValueError, KeyError, TypeError):
            return None
    claims = jwt_claims(content.strip())
    exp = claims.get("exp") if claims else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class TokenWriter:
    """Writes tokens to OUTPUT in FORMAT with FILE_MODE, and remembers what it wrote."""

    def __init__(self, path: Path, fmt: Literal["raw", "json"], mode: int) -> None:
        self.path = path
        self.format: Literal["raw", "json"] = fmt
        self.mode = mode
        # What is ours on disk: the token (or, adopted from a previous run, the bytes)
        # and the file's identity. None when nothing is, or it was given up on purpose.
        self._ours: tuple[Token | bytes, _Identity] | None = None

    def write(self, token: Token, *, now: float) -> None:
        data = render(token, self.format, now=now)
        # A failed write leaves the previous file, still ours, as it was.
        self._ours = (token, atomic_write(self.path, data, self.mode))

    def adopt(self) -> None:
        """Take the file a previous run left as ours."""
        try:
            with self.path.open("rb") as f:
                self._ours = (f.read(), _identity(os.fstat(f.fileno())))
        except OSError:
            self._ours = None

    def intact(self) -> bool:
        """The file on disk is the one we wrote (or adopted), unchanged."""
        if self._ours is None:
            return False
        try:
            return _identity(os.stat(self.path)) == self._ours[1]
        except OSError:
            return False

    def lost(self) -> bool:
        """We had a file on disk, and someone else deleted, replaced or rewrote it."""
        return self._ours is not None and not self.intact()

    def restore(self, *, now: float) -> None:
        """Write our last token again. On OutputError there is nothing left to restore:
        the next successful `write` makes a file ours again."""
        if self._ours is None:
            return
        content, _ = self._ours
        self._ours = None
        data = content if isinstance(content, bytes) else render(content, self.format, now=now)
        self._ours = (content, atomic_write(self.path, data, self.mode))

    def remove(self) -> None:
        self._ours = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise OutputError(
                f"cannot remove the expired token file {self.path}: {_reason(exc)}"
            ) from exc
