"""Credential files and trust anchors: checked at start, re-read when they rotate."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.support import python_output
from tests.support.fakes import rotate
from token_refresher.credentials import CredentialFile, check_files
from token_refresher.errors import CredentialError
from token_refresher_operator.devcert import write_self_signed


def self_signed_ca() -> str:
    with tempfile.TemporaryDirectory() as directory:
        return write_self_signed(Path(directory)).pem


def test_valid_ca_bundles_pass_the_start_checks(make_settings, tmp_path: Path) -> None:
    pem = self_signed_ca()
    (tmp_path / "ca.pem").write_text(pem)
    (tmp_path / "report-token").write_text("t" * 20)
    settings = make_settings(
        ca_file=tmp_path / "ca.pem",
        report_url="https://op/report",
        report_token_file=tmp_path / "report-token",
        report_ca=pem,
    )
    assert check_files(settings) == []


def test_unusable_files_are_one_line_each_naming_the_variable(
    make_settings, tmp_path: Path
) -> None:
    (tmp_path / "garbage.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text(
        "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----"
    )
    (tmp_path / "empty").write_text("\n")
    settings = make_settings(
        ca_file=tmp_path / "garbage.pem",
        private_key_file=tmp_path / "key.pem",
        client_auth="private_key_jwt",
        service_account_token_file=tmp_path / "empty",
        report_url="https://op/report",
        report_token_file=tmp_path / "absent",
        report_ca="-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----",
    )
    problems = check_files(settings)
    assert [p.split(":")[0] for p in problems] == [
        "TOKEN_REFRESHER_SERVICE_ACCOUNT_TOKEN_FILE",
        "TOKEN_REFRESHER_REPORT_TOKEN_FILE",
        "TOKEN_REFRESHER_PRIVATE_KEY_FILE",
        "TOKEN_REFRESHER_CA_FILE",
        "TOKEN_REFRESHER_REPORT_CA",
    ]
    assert "is empty" in problems[0]
    assert "does not hold a RSA private key usable with RS256" in problems[2]


def test_a_secret_is_cached_until_its_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("first-secret")
    secret = CredentialFile(path, what="client secret")
    assert secret.read() == "first-secret"
    rotate(path, "second-secret")
    assert secret.read() == "second-secret"


def test_a_missing_credential_names_the_file_not_the_content(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match=r"cannot read the client secret file .*/nope: No"):
        CredentialFile(tmp_path / "nope", what="client secret").read()


# --- the system CAs --------------------------------------------------------------------


def _verify_paths(cafile: str | None, capath: str, default_cafile: str) -> Any:
    import ssl

    env = ("SSL_CERT_FILE", "SSL_CERT_DIR")
    return ssl.DefaultVerifyPaths(cafile, capath, env[0], default_cafile, env[1], capath)


def _system_context(monkeypatch: pytest.MonkeyPatch, paths: Any) -> Any:
    import ssl

    from token_refresher import credentials

    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: paths)
    credentials.system_ssl_context.cache_clear()
    try:
        return credentials.system_ssl_context()
    finally:
        credentials.system_ssl_context.cache_clear()


def test_the_system_cas_come_from_the_hashed_directory_on_demand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = write_self_signed(tmp_path)
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "0a1b2c3d.0").write_bytes(cert.cert_file.read_bytes())
    bundle = str(cert.cert_file)
    context = _system_context(monkeypatch, _verify_paths(bundle, str(tmp_path / "certs"), bundle))
    assert context.cert_store_stats()["x509"] == 0  # nothing parsed before a handshake


def test_a_bundle_of_ones_own_or_an_unhashed_directory_loads_the_defaults_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = write_self_signed(tmp_path)
    (tmp_path / "certs").mkdir()
    own = str(cert.cert_file)
    monkeypatch.setenv("SSL_CERT_FILE", own)  # what OpenSSL's defaults then load
    paths = _verify_paths(own, str(tmp_path / "certs"), str(tmp_path / "platform.pem"))
    assert _system_context(monkeypatch, paths).cert_store_stats()["x509"] == 1
    paths = _verify_paths(own, str(tmp_path / "certs"), own)  # the platform's, not hashed
    assert _system_context(monkeypatch, paths).cert_store_stats()["x509"] == 1


def test_the_sidecar_imports_neither_the_family_client_nor_the_reporter_it_does_not_use() -> None:

    code = (
        "import sys, token_refresher.settings\n"
        "print(sorted(m for m in ('httpx2', 'prometheus_client') if m in sys.modules))\n"
        "import token_refresher.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[-1] in ('holder', 'kube', 'report')"
        " and m.startswith('token_refresher.')))\n"
    )
    assert python_output(code).splitlines() == ["[]", "[]"]
