"""Credentials kept in files that someone else rotates, and the TLS trust we build.

The kubelet rewrites projected service-account tokens about hourly and swaps Secret
volumes atomically (a `..data` symlink flip), and users rotate client secrets without
restarting pods. So settings hold *paths*, and the files are read when used: the
service-account token on every use, the client secret and private key again whenever
their file changes. A file that cannot be read at start is a configuration error
(`check_files`); later it is a transient `CredentialError`, since a rotation may be
half-way through.
"""

from __future__ import annotations

import functools
import os
import re
import ssl
from pathlib import Path
from typing import Any, Literal

from .errors import CredentialError
from .redact import redactor
from .settings import DEFAULT_TOKEN, Settings, token_env_name

__all__ = ["CredentialFile", "PrivateKeyFile", "check_files", "ssl_context", "system_ssl_context"]


class CredentialFile:
    """A secret in a file; re-read every time (`always=True`) or when the file changes."""

    def __init__(self, path: Path, *, what: str, always: bool = False) -> None:
        self.path = path
        self.what = what
        self._always = always
        self._stamp: tuple[int, int, int] | None = None
        self._value: str | None = None

    def read(self) -> str:
        try:
            if not self._always:
                st = os.stat(self.path)  # follows the ..data symlink Secret volumes use
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                if stamp == self._stamp and self._value is not None:
                    return self._value
            else:
                stamp = None
            value = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise CredentialError(
                f"cannot read the {self.what} file {self.path}: {reason}"
            ) from exc
        if not value:
            raise CredentialError(f"the {self.what} file {self.path} is empty")
        redactor.add(value)
        self._stamp, self._value = stamp, value
        return value


class PrivateKeyFile:
    """The private_key_jwt signing key, re-imported when its file changes."""

    def __init__(self, path: Path, alg: str) -> None:
        self._file = CredentialFile(path, what="private key")
        self._alg = alg
        self._pem: str | None = None
        self._key: Any = None

    def read(self) -> Any:
        pem = self._file.read()
        if pem != self._pem:
            self._key = _import_key(pem, self._alg, self._file.path)
            self._pem = pem
        return self._key


def _import_key(pem: str, alg: str, path: Path) -> Any:
    # joserfc cannot guess the key type from PEM; the JWS algorithm family tells it.
    from joserfc import jwk
    from joserfc.errors import JoseError

    kty: Literal["EC", "OKP", "RSA"] = (
        "EC" if alg.startswith("ES") else "OKP" if alg in ("EdDSA", "Ed25519") else "RSA"
    )
    try:
        return jwk.import_key(pem, kty)
    except (JoseError, ValueError, TypeError) as exc:
        raise CredentialError(
            f"the private key file {path} does not hold a {kty} private key usable with {alg}"
        ) from exc


def ssl_context(*, cafile: Path | None = None, cadata: str | None = None) -> ssl.SSLContext:
    """A verifying client context trusting the system CAs, or only the given bundle."""
    if cafile is None and cadata is None:
        return system_ssl_context()
    return ssl.create_default_context(
        cafile=str(cafile) if cafile is not None else None, cadata=cadata
    )


_HASHED_NAME = re.compile(r"[0-9a-f]{8}\.[0-9]+")


@functools.cache
def system_ssl_context() -> ssl.SSLContext:
    """The one context trusting the system CAs, shared by every client of the process.

    OpenSSL's default paths are a bundle file, which it parses whole when loaded (every
    CA of the system, ~1.2 MiB kept for the life of the process), and a directory of
    certificates named by subject hash (`c_rehash`, Debian's update-ca-certificates),
    where it looks up only the issuer a handshake needs. Both come from the same
    ca-certificates package, so the directory alone is used when it is hashed and the
    bundle is the platform's own (SSL_CERT_FILE unset, or naming that same file); a
    bundle of one's own in SSL_CERT_FILE is loaded as before.
    """
    paths = ssl.get_default_verify_paths()
    capath = paths.capath
    own_bundle = paths.cafile is not None and os.path.realpath(paths.cafile) != os.path.realpath(
        paths.openssl_cafile
    )
    if capath and not own_bundle and _hashed(capath):
        return ssl.create_default_context(capath=capath)
    return ssl.create_default_context()


def _hashed(directory: str) -> bool:
    try:
        with os.scandir(directory) as entries:
            return any(_HASHED_NAME.fullmatch(entry.name) for entry in entries)
    except OSError:
        return False


def check_files(settings: Settings, *, token: str = DEFAULT_TOKEN) -> list[str]:
    """One line per configured file that cannot be used now, naming its env var (for a
    named token, `TOKEN_REFRESHER_TOKENS__<NAME>__<FIELD>`). The report settings belong
    to the whole sidecar: they are checked with the default token only."""
    problems: list[str] = []
    process = token == DEFAULT_TOKEN

    def env_name(field: str) -> str:
        return token_env_name(token, field)

    def readable(field: str, what: str) -> None:
        path = getattr(settings, field)
        if path is None:
            return
        try:
            CredentialFile(path, what=what, always=True).read()
        except CredentialError as exc:
            problems.append(f"{env_name(field)}: {exc}")

    readable("client_secret_file", "client secret")
    readable("service_account_token_file", "service-account token")
    if process:
        readable("report_token_file", "report token")
    if settings.refresh_token_file is not None and not settings.effective_state_file.exists():
        readable("refresh_token_file", "refresh token")
    if settings.private_key_file is not None:
        try:
            PrivateKeyFile(settings.private_key_file, settings.private_key_alg).read()
        except CredentialError as exc:
            problems.append(f"{env_name('private_key_file')}: {exc}")
    for field, kwargs in (
        ("ca_file", {"cafile": settings.ca_file}),
        ("report_ca_file", {"cafile": settings.report_ca_file}),
        ("report_ca", {"cadata": settings.report_ca}),
    ):
        if next(iter(kwargs.values())) is None or (field.startswith("report") and not process):
            continue
        try:
            ssl_context(**kwargs)
        except (OSError, ssl.SSLError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            problems.append(f"{env_name(field)}: not a usable PEM CA bundle: {reason}")
    return problems
