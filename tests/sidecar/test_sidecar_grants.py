"""What goes over the wire for each grant and each client authentication method."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from tests.support import python_output
from tests.support.fakes import CLIENT_SECRET, TOKEN_URL, FakeIdP, rotate
from token_refresher import Refresher
from token_refresher.grants import ASSERTION_LIFETIME

SA_TOKEN = "SECRET-CANARY-sa-token-eyJhbGciOi"


@pytest.fixture
def sa_token_file(tmp_path: Path) -> Path:
    path = tmp_path / "sa" / "token"
    path.parent.mkdir()
    path.write_text(SA_TOKEN)
    return path


async def one_request(settings, idp: FakeIdP, clock, half):
    async with Refresher(settings, transport=idp.transport, clock=clock, random=half) as r:
        assert await r.refresh(), r.status()["last_error"]
    return idp.posts[-1]


async def test_client_credentials_with_client_secret_basic(make_settings, idp, clock, half) -> None:
    settings = make_settings(
        scope="read write", audience="api://billing", resource="https://api.example"
    )
    seen = await one_request(settings, idp, clock, half)
    expected = base64.b64encode(f"billing:{CLIENT_SECRET}".encode()).decode()
    assert seen.headers["authorization"] == f"Basic {expected}"
    assert seen.form == {
        "grant_type": "client_credentials",
        "scope": "read write",
        "audience": "api://billing",
        "resource": "https://api.example",
    }
    assert seen.headers["accept"] == "application/json"


async def test_client_secret_post_sends_the_secret_in_the_form(
    make_settings, idp, clock, half
) -> None:
    seen = await one_request(make_settings(client_auth="client_secret_post"), idp, clock, half)
    assert "authorization" not in seen.headers
    assert seen.form["client_id"] == "billing"
    assert seen.form["client_secret"] == CLIENT_SECRET


async def test_client_secret_is_reread_when_its_file_changes(
    make_settings, idp, clock, half, secret_file: Path
) -> None:
    async with Refresher(
        make_settings(client_auth="client_secret_post"),
        transport=idp.transport,
        clock=clock,
        random=half,
    ) as r:
        assert await r.refresh()
        rotate(secret_file, "SECRET-CANARY-rotated")
        assert await r.refresh()
    assert [s.form["client_secret"] for s in idp.posts] == [CLIENT_SECRET, "SECRET-CANARY-rotated"]


def pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_private_key_jwt_signs_an_assertion_for_the_token_endpoint(
    make_settings, idp, clock, half, tmp_path: Path, alg: str
) -> None:
    if alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = RSAKey.import_key(pem(private))
    else:
        private = ec.generate_private_key(ec.SECP256R1())
        public = ECKey.import_key(pem(private))
    key_file = tmp_path / "key.pem"
    key_file.write_text(pem(private))
    settings = make_settings(
        client_secret_file=None, private_key_file=key_file, private_key_alg=alg
    )
    seen = await one_request(settings, idp, clock, half)
    assert seen.form["client_assertion_type"] == (
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    )
    claims = jwt.decode(seen.form["client_assertion"], public, algorithms=[alg]).claims
    assert (claims["iss"], claims["sub"], claims["aud"]) == ("billing", "billing", TOKEN_URL)
    assert claims["jti"]
    assert "authorization" not in seen.headers


async def test_private_key_jwt_names_its_key_by_thumbprint_and_lives_briefly(
    make_settings, idp, clock, half, tmp_path: Path
) -> None:
    key = RSAKey.generate_key(2048)
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(key.as_pem(private=True))
    settings = make_settings(client_secret_file=None, private_key_file=key_file)
    async with Refresher(settings, transport=idp.transport, clock=clock, random=half) as r:
        assert await r.refresh(), r.status()["last_error"]
        assert await r.refresh(), r.status()["last_error"]
    tokens = [jwt.decode(s.form["client_assertion"], key) for s in idp.posts]
    assert [t.header["kid"] for t in tokens] == [key.thumbprint()] * 2
    assert [t.claims["iat"] for t in tokens] == [int(clock.wall)] * 2  # from our clock
    assert [t.claims["exp"] - t.claims["iat"] for t in tokens] == [ASSERTION_LIFETIME] * 2
    assert tokens[0].claims["jti"] != tokens[1].claims["jti"]


async def test_private_key_jwt_sends_the_configured_key_id(
    make_settings, idp, clock, half, tmp_path: Path
) -> None:
    key = RSAKey.generate_key(2048)
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(key.as_pem(private=True))
    settings = make_settings(
        client_secret_file=None, private_key_file=key_file, private_key_id="billing-2026-11"
    )
    seen = await one_request(settings, idp, clock, half)
    assert jwt.decode(seen.form["client_assertion"], key).header["kid"] == "billing-2026-11"


async def test_service_account_client_auth_sends_the_projected_token(
    make_settings, idp, clock, half, sa_token_file: Path
) -> None:
    settings = make_settings(
        client_secret_file=None,
        client_auth="service_account",
        service_account_token_file=sa_token_file,
    )
    async with Refresher(settings, transport=idp.transport, clock=clock, random=half) as r:
        assert await r.refresh()
        rotate(sa_token_file, "SECRET-CANARY-sa-token-rotated")  # kubelet rotated it
        assert await r.refresh()
    first, second = idp.posts
    assert first.form == {
        "grant_type": "client_credentials",
        "client_id": "billing",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": SA_TOKEN,
    }
    assert second.form["client_assertion"] == "SECRET-CANARY-sa-token-rotated"


async def test_public_client_sends_only_its_id(make_settings, idp, clock, half) -> None:
    settings = make_settings(client_secret_file=None, client_auth="none")
    seen = await one_request(settings, idp, clock, half)
    assert seen.form == {"grant_type": "client_credentials", "client_id": "billing"}
    assert "authorization" not in seen.headers


async def test_token_exchange_sends_the_service_account_token_as_subject(
    make_settings, idp, clock, half, sa_token_file: Path
) -> None:
    settings = make_settings(
        grant="token_exchange",
        client_secret_file=None,
        client_auth="none",
        client_id=None,
        service_account_token_file=sa_token_file,
        audience="api://billing",
        requested_token_type="urn:ietf:params:oauth:token-type:access_token",
        scope="read",
    )
    idp.reply(
        idp.token(
            token_type="N_A", issued_token_type="urn:ietf:params:oauth:token-type:access_token"
        )
    )
    seen = await one_request(settings, idp, clock, half)
    assert seen.form == {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": SA_TOKEN,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "audience": "api://billing",
        "scope": "read",
    }
    assert "authorization" not in seen.headers


async def test_jwt_bearer_sends_the_service_account_token_as_assertion(
    make_settings, idp, clock, half, sa_token_file: Path
) -> None:
    settings = make_settings(grant="jwt_bearer", service_account_token_file=sa_token_file)
    seen = await one_request(settings, idp, clock, half)
    assert seen.form == {
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "assertion": SA_TOKEN,
    }
    assert seen.headers["authorization"].startswith("Basic ")


async def test_an_unreadable_service_account_token_is_a_transient_failure(
    make_settings, idp, clock, half, sa_token_file: Path
) -> None:
    settings = make_settings(grant="jwt_bearer", service_account_token_file=sa_token_file)
    async with Refresher(settings, transport=idp.transport, clock=clock, random=half) as r:
        rotate(sa_token_file, None)
        assert not await r.refresh()
        last = r.status()["last_error"]
        assert last["error"] == "credential_unreadable"
        assert last["permanent"] is False
        assert str(sa_token_file) in last["message"]
        rotate(sa_token_file, SA_TOKEN)
        assert await r.refresh()
    assert len(idp.posts) == 1


# --- client_secret_basic's encoding (RFC 6749 section 2.3.1) --------------------------------


def _decoded_basic(value: str) -> tuple[str, str]:
    """What an IdP following RFC 6749 section 2.3.1 reads from the header."""
    from urllib.parse import unquote_plus

    scheme, _, blob = value.partition(" ")
    assert scheme == "Basic"
    user, sep, password = base64.b64decode(blob).decode("ascii").partition(":")
    assert sep == ":"
    return unquote_plus(user), unquote_plus(password)


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [
        ("billing", "plain-Secret_0.9~"),
        ("client:with+colon", 's3cr+t/x= %41:~!"&end'),
        ("billing", "base64ish+/abc=="),
        ("billing", "ünïcødé-€-secret"),
    ],
)
def test_basic_credentials_are_each_form_encoded_then_joined(client_id: str, secret: str) -> None:
    from token_refresher.grants import basic_credentials

    header = basic_credentials(client_id, secret)
    assert _decoded_basic(header) == (client_id, secret)
    user = base64.b64decode(header.split()[1]).decode("ascii").split(":")[0]
    assert ":" not in user  # the separator is unambiguous
    # For a secret of letters, digits and `-._~` (most generated ones) the encoding
    # changes nothing: the header is authlib's, byte for byte, as before.
    if all(c.isascii() and (c.isalnum() or c in "-._~") for c in client_id + secret):
        from authlib.oauth2.auth import encode_client_secret_basic

        class _Client:
            client_secret = secret

        _Client.client_id = client_id  # type: ignore[attr-defined]
        _, headers, _ = encode_client_secret_basic(_Client, "POST", TOKEN_URL, {}, "")
        assert headers["Authorization"] == header


async def test_client_secret_basic_sends_an_awkward_secret_form_encoded(
    make_settings, idp, clock, half
) -> None:
    settings = make_settings()
    settings.client_secret_file.write_text("a+b:c%d é")
    seen = await one_request(settings, idp, clock, half)
    assert _decoded_basic(seen.headers["authorization"]) == ("billing", "a+b:c%d é")


async def test_client_secret_post_keeps_the_grant_form_and_appends_the_credentials(
    make_settings, idp, clock, half
) -> None:
    settings = make_settings(client_auth="client_secret_post", scope="a b&c=d")
    settings.client_secret_file.write_text("a+b:c%d&e=f")
    seen = await one_request(settings, idp, clock, half)
    assert seen.form == {
        "grant_type": "client_credentials",
        "scope": "a b&c=d",
        "client_id": "billing",
        "client_secret": "a+b:c%d&e=f",
    }
    assert int(seen.headers["content-length"]) == len(seen.body)


def test_only_private_key_jwt_imports_authlib_s_oauth2_package(tmp_path: Path) -> None:
    # authlib.oauth2's package import loads its whole authorization server (~1 MiB):
    # the other methods are a header or two form fields of our own.

    (tmp_path / "secret").write_text("s")
    code = (
        "import sys, httpx2\n"
        "from token_refresher import Settings\n"
        "from token_refresher.grants import Credentials\n"
        "for auth in ('client_secret_basic', 'client_secret_post', 'none'):\n"
        "    s = Settings.from_env({'TOKEN_REFRESHER_TOKEN_URL': 'https://idp.example/token',\n"
        "        'TOKEN_REFRESHER_CLIENT_ID': 'c', 'TOKEN_REFRESHER_CLIENT_AUTH': auth,\n"
        f"        'TOKEN_REFRESHER_CLIENT_SECRET_FILE': {str(tmp_path / 'secret')!r},\n"
        f"        'TOKEN_REFRESHER_OUTPUT': {str(tmp_path / 'token')!r}}})\n"
        "    flow = Credentials(s).client_auth('https://idp.example/token')\n"
        "    request = httpx2.Request('POST', 'https://idp.example/token', data={'a': 'b'})\n"
        "    next(flow.auth_flow(request))\n"
        "print(sorted({'.'.join(m.split('.')[:2]) for m in sys.modules\n"
        "    if m.startswith('authlib.')}))\n"
    )
    assert python_output(code).strip() == "[]"


@pytest.mark.parametrize(("secret", "hinted"), [("a+b:c", True), ("plain-Secret_0.9~", False)])
async def test_invalid_client_says_when_basic_encoding_changed_the_secret(
    make_settings, idp, clock, half, secret: str, hinted: bool
) -> None:
    from token_refresher.grants import BASIC_ENCODING_HINT

    settings = make_settings()
    settings.client_secret_file.write_text(secret)
    idp.script.append(idp.error(401, "invalid_client", "Client authentication failed"))
    async with Refresher(settings, transport=idp.transport, clock=clock, random=half) as r:
        assert not await r.refresh()
        last = r.status()["last_error"]
    assert last["error"] == "invalid_client"
    assert last["permanent"] is True
    assert (BASIC_ENCODING_HINT in last["message"]) is hinted
    assert "Client authentication failed" in last["message"]
    assert secret not in last["message"]


def _discovering_idp(document: dict, error: str) -> httpx2.MockTransport:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":
            return httpx2.Response(
                200, json={"token_endpoint": "https://idp.example/token", **document}
            )
        return httpx2.Response(400, json={"error": error})

    return httpx2.MockTransport(handler)


@pytest.mark.parametrize(
    ("document", "error", "hint"),
    [
        (
            {"token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"]},
            "invalid_client",
            "the identity provider's discovery document lists "
            "token_endpoint_auth_methods_supported: client_secret_post, private_key_jwt "
            "(not client_secret_basic)",
        ),
        (
            {"grant_types_supported": ["authorization_code", "refresh_token"]},
            "unauthorized_client",
            "the identity provider's discovery document lists grant_types_supported: "
            "authorization_code, refresh_token (not client_credentials)",
        ),
        (
            {"token_endpoint_auth_methods_supported": ["client_secret_basic"]},
            "invalid_client",
            None,
        ),
        ({}, "invalid_client", None),  # not listed: RFC 8414's default is Basic
        ({"grant_types_supported": ["client_credentials"]}, "unsupported_grant_type", None),
        ({"grant_types_supported": ["refresh_token"]}, "invalid_scope", None),
    ],
)
async def test_a_refusal_names_what_discovery_did_not_advertise(
    make_settings, clock, half, document: dict, error: str, hint: str | None
) -> None:
    settings = make_settings(token_url=None, issuer="https://idp.example")
    transport = _discovering_idp(document, error)
    async with Refresher(settings, transport=transport, clock=clock, random=half) as r:
        assert not await r.refresh()
        last = r.status()["last_error"]
    assert last["error"] == error
    message = last["message"]
    assert message.startswith("token endpoint https://idp.example/token rejected")
    if hint is None:
        assert "discovery document" not in message
    else:
        assert message.endswith("; " + hint)
