"""Test certificates: a CA, and client or serving certificates it signs.

The control plane's PKI (tests/controlplane.py) and the stand-in webhooks of the tests
need certificates a real client verifies: a CA with key usages, server certificates
whose SANs name the address the apiserver dials. (trustme would do, but it is not among
our dependencies; this is all we need of it.) EC P-256 keys, valid from five minutes ago
for two days.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "LoopbackTLS", "issue", "loopback_tls", "pem_cert", "pem_key"]

Issued = tuple[x509.Certificate, Any]  # a certificate and its private key


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue(
    subject: str,
    *,
    ca: Issued | None,
    org: str | None = None,
    server: bool = False,
    sans: Sequence[str] = ("localhost", "127.0.0.1"),
) -> Issued:
    """A self-signed CA (`ca=None`), or a certificate `ca` signs: a client certificate of
    `subject` in group `org`, or with `server` a serving one for `sans`."""
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, subject)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    name = x509.Name(attrs)
    now = dt.datetime.now(dt.UTC)
    issuer_name, signing_key = (ca[0].subject, ca[1]) if ca else (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
    )
    if ca is None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        ).add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(name) for name in sans]), critical=False
            )
    return builder.sign(signing_key, hashes.SHA256()), key


@dataclass(frozen=True)
class LoopbackTLS:
    """A CA's PEM, and the files of a serving certificate for 127.0.0.1 it signed."""

    ca_pem: bytes
    cert_file: Path
    key_file: Path


def loopback_tls(workdir: Path, *, ca_name: str = "token-refresher-test-ca") -> LoopbackTLS:
    """A fresh CA and a serving certificate for 127.0.0.1, written as tls.crt and tls.key
    in `workdir`: what a stand-in HTTPS server (a webhook) needs, and the caBundle that
    makes the apiserver trust it."""
    ca = issue(ca_name, ca=None)
    cert, key = issue("127.0.0.1", ca=ca, server=True, sans=("127.0.0.1",))
    cert_file, key_file = workdir / "tls.crt", workdir / "tls.key"
    cert_file.write_bytes(pem_cert(cert))
    key_file.write_bytes(pem_key(key))
    key_file.chmod(0o600)
    return LoopbackTLS(pem_cert(ca[0]), cert_file, key_file)
