"""A throwaway self-signed serving certificate for DEV mode.

kopf can generate one itself, but only through `certbuilder`/`oscrypto` (the kopf[dev]
extra), and oscrypto fails to load against current OpenSSL 3 releases ("Error detecting
the version of libcrypto"). `cryptography` is a dependency of the operator anyway, and
the report endpoint needs the same pair as files, so DEV mode makes its own.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DevCertificate", "write_self_signed"]


class DevCertificate:
    """Paths of a self-signed certificate (which is its own CA) and its key."""

    def __init__(self, *, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file

    @property
    def pem(self) -> str:
        return self.cert_file.read_text(encoding="ascii")


def write_self_signed(
    directory: Path, *, hosts: Iterable[str] = ("localhost", "127.0.0.1")
) -> DevCertificate:
    """Write tls.crt and tls.key (0600) into `directory`, valid for `hosts` for 30 days."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token-refresher-dev")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        # The apiserver is given this very certificate as caBundle, so it must be a CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    for path, data in (
        (cert_file, cert.public_bytes(serialization.Encoding.PEM)),
        (
            key_file,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
    ):
        path.write_bytes(data)
        path.chmod(0o600)
    return DevCertificate(cert_file=cert_file, key_file=key_file)
