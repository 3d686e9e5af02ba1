"""Real identity providers for the tests, run as local processes on 127.0.0.1.

A pytest plugin, registered by tests/conftest.py (`pytest_plugins = ["tests.idp"]`; by
hand, `python -m pytest -p tests.idp`). Two IdPs, because neither speaks every grant the
sidecar supports:

| what                         | oidc-provider (hack/idp, npm)    | Dex v2.41.1 (hack/tools.sh)   |
|------------------------------|----------------------------------|-------------------------------|
| client_credentials           | yes: basic, post, private_key_jwt| no (added after 2.41)         |
| refresh_token with rotation  | yes; bootstrap via a test-only   | yes; bootstrap via its        |
|                              | password grant                   | password grant                |
| token exchange (RFC 8693)    | no                               | yes, through an oidc connector|
| jwt-bearer grant (RFC 7523)  | yes, for `trusted_issuers`       | no                            |
| client auth by SA token      | no (iss and sub must = client_id)| no                            |
| access tokens                | RFC 9068 JWT, aud = the resource | JWT, aud = the client id      |
| restart keeps refresh tokens | yes (state in a directory)       | no (memory storage)           |

Fixtures (function-scoped factories; everything they start is stopped when the test ends):

- `oidc_provider(ttl=5, clients=None, ...) -> OidcProvider` (also `oidc_provider.start`)
- `dex_factory(id_token_ttl=10, extra_connectors=None, ...) -> Dex`

Each process runs in its own session, so stopping it kills its whole process group; a
session fixture fails the run if one is still alive at the end.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote_plus

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.controlplane import ControlPlane
from tests.controlplane import tools as locate_tools
from tests.support import WaitTimeout, free_port, http_ok, stop_process, wait_until

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "AWKWARD_CLIENT_ID",
    "AWKWARD_CLIENT_SECRET",
    "DEX_GRANTS",
    "DEX_USER",
    "ID_TOKEN_TYPE",
    "OIDC_USER",
    "Dex",
    "DexFactory",
    "IdPHarnessError",
    "OAuthClient",
    "OidcProvider",
    "OidcProviderFactory",
    "kubernetes_connector",
    "kubernetes_trust",
    "leftover_processes",
]

REPO = Path(__file__).resolve().parent.parent
IDP_DIR = REPO / "hack" / "idp"

ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"

AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]


class IdPHarnessError(RuntimeError):
    """An IdP process could not be started, or did not become ready."""


# --- clients -------------------------------------------------------------------------------


@functools.cache
def _client_key() -> dict[str, Any]:
    # One RSA key per test session for the private_key_jwt client: generating is slow-ish.
    key = RSAKey.generate_key(2048, parameters={"kid": "client-jwt-1", "alg": "RS256"})
    return dict(key.as_dict(private=True))


# A client id and secret with every character HTTP Basic mangles unless each is
# form-encoded first (RFC 6749 section 2.3.1): `+` (decoded as a space), `%` (an escape),
# `:` (Basic's own separator), `/` and `=` (generated base64 secrets), a space. Both
# stay printable ASCII, the VSCHARs RFC 6749 appendix A allows (oidc-provider refuses
# any other secret).
AWKWARD_CLIENT_ID = "client:awkward+1"
AWKWARD_CLIENT_SECRET = 's3cr+t/x= %41:~!"&end'


@dataclass(frozen=True)
class OAuthClient:
    """A client registered at a test IdP, and how it authenticates at the token endpoint."""

    client_id: str
    auth_method: AuthMethod
    client_secret: str | None = None
    grant_types: tuple[str, ...] = ("client_credentials",)
    private_jwk: Mapping[str, Any] | None = None  # the private RSA JWK for private_key_jwt
    # Public JWKs registered beside the client's own, as while a key is being rotated.
    other_public_jwks: tuple[Mapping[str, Any], ...] = ()

    @property
    def public_jwks(self) -> dict[str, Any]:
        assert self.private_jwk is not None, f"client {self.client_id} has no key"
        own = RSAKey.import_key(dict(self.private_jwk)).as_dict(private=False)
        return {"keys": [own, *(dict(k) for k in self.other_public_jwks)]}

    def private_key_pem(self) -> bytes:
        """The client's key as PKCS#8 PEM (what PRIVATE_KEY_FILE holds)."""
        assert self.private_jwk is not None, f"client {self.client_id} has no key"
        return bytes(RSAKey.import_key(dict(self.private_jwk)).as_pem(private=True))

    def assertion(self, audience: str, *, lifetime: int = 60) -> str:
        """An RFC 7523 client assertion (iss = sub = client_id) for `audience`."""
        assert self.private_jwk is not None, f"client {self.client_id} has no key"
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + lifetime,
        }
        key = RSAKey.import_key(dict(self.private_jwk))
        return jwt.encode({"alg": "RS256", "kid": self.private_jwk["kid"]}, claims, key)

    def token_request(
        self, token_url: str, *, client_assertion: str | None = None, **params: str
    ) -> dict[str, Any]:
        """Keyword arguments for `httpx2.post(token_url, **kwargs)` as this client;
        `client_assertion` replaces the fresh one private_key_jwt would sign (to replay
        one, or send an expired one)."""
        data = dict(params)
        kwargs: dict[str, Any] = {"data": data}
        if self.auth_method == "client_secret_basic":
            # RFC 6749 section 2.3.1: each form-encoded before HTTP Basic joins them.
            kwargs["auth"] = (
                quote_plus(self.client_id, safe=""),
                quote_plus(self.client_secret or "", safe=""),
            )
        elif self.auth_method == "client_secret_post":
            data.update(client_id=self.client_id, client_secret=self.client_secret or "")
        elif self.auth_method == "private_key_jwt":
            data.update(
                client_id=self.client_id,
                client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                client_assertion=client_assertion or self.assertion(token_url),
            )
        else:
            data["client_id"] = self.client_id
        return kwargs

    def oidc_provider_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "client_id": self.client_id,
            "token_endpoint_auth_method": self.auth_method,
            "grant_types": list(self.grant_types),
            "response_types": [],
            "redirect_uris": [],
        }
        if self.client_secret is not None:
            meta["client_secret"] = self.client_secret
        if self.auth_method == "private_key_jwt":
            meta["jwks"] = self.public_jwks
        return meta


def _post_token(
    token_url: str, client: OAuthClient, *, client_assertion: str | None = None, **params: str
) -> dict[str, Any]:
    kwargs = client.token_request(token_url, client_assertion=client_assertion, **params)
    resp = httpx2.post(token_url, timeout=10, **kwargs)
    if resp.status_code != 200:
        raise AssertionError(
            f"token endpoint {token_url} answered {resp.status_code} to client "
            f"{client.client_id!r} ({params.get('grant_type')}): {resp.text[:500]}"
        )
    return dict(resp.json())


# --- processes -----------------------------------------------------------------------------

_LIVE: dict[int, _Process] = {}


class _Process:
    """A child in a session of its own (so stopping it takes its children too), with stdout
    and stderr in files under `workdir` for readiness checks and failure messages."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path) -> None:
        self.name, self.argv, self.workdir = name, list(argv), workdir
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
            )
        _LIVE[self.proc.pid] = self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            _LIVE.pop(self.proc.pid, None)

    def tail(self, lines: int = 25) -> str:
        text = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) or "(nothing)"

    def wait_ready(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        """Poll `check` until it holds; fail naming `what` and showing stderr's tail."""

        def alive_and_ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                _LIVE.pop(self.proc.pid, None)
                raise IdPHarnessError(
                    f"{self.name} exited with code {self.proc.returncode} while waiting "
                    f"for {what}; last lines of its stderr ({self.stderr_path}):\n{self.tail()}"
                )
            return check()

        try:
            wait_until(what, alive_and_ready, timeout, every=0.1, note=None)
        except WaitTimeout:
            self.stop()
            raise IdPHarnessError(
                f"{self.name} was not ready after {timeout:.0f} s: waited for {what}; "
                f"last lines of its stderr ({self.stderr_path}):\n{self.tail()}"
            ) from None


def leftover_processes() -> list[str]:
    """IdP processes started here that are still alive, killed now and described."""
    found = []
    for pid, process in list(_LIVE.items()):
        if process.running:
            found.append(f"pid {pid}: {' '.join(process.argv)[:200]}")
        process.stop()
        _LIVE.pop(pid, None)
    return found


@pytest.fixture(scope="session", autouse=True)
def _no_idp_process_left_behind() -> Iterator[None]:
    yield
    left = leftover_processes()
    if left:
        raise AssertionError("IdP processes outlived the test session:\n" + "\n".join(left))


# --- oidc-provider -------------------------------------------------------------------------

OIDC_USER = ("alice", "alice-password")  # username, password for the password grant
_OIDC_GRANTS = ("client_credentials", "password", "refresh_token", JWT_BEARER)


def default_oidc_clients() -> list[OAuthClient]:
    return [
        OAuthClient("client-basic", "client_secret_basic", "client-basic-secret", _OIDC_GRANTS),
        OAuthClient("client-post", "client_secret_post", "client-post-secret", _OIDC_GRANTS),
        OAuthClient("client-jwt", "private_key_jwt", None, _OIDC_GRANTS, _client_key()),
        OAuthClient("client-public", "none", None, ("password", "refresh_token")),
    ]


class _LocalIdP:
    """What both IdP processes share: URLs derived from `issuer`, and the process."""

    _process: _Process | None

    @property
    def issuer(self) -> str:
        raise NotImplementedError

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/token"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        """The process id, also its process group id (None before the first start)."""
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def log_tail(self, lines: int = 25) -> str:
        return self._process.tail(lines) if self._process else "(not started)"


@dataclass
class OidcProvider(_LocalIdP):
    """panva/oidc-provider serving http://127.0.0.1:PORT (hack/idp/oidc-server.mjs).

    Access tokens are RFC 9068 JWTs (typ at+jwt, aud = `resource`, signed with the keys at
    `jwks_url`) unless started with access_token_format="opaque". client_credentials
    tokens live `ttl` s, password/refresh_token ones `access_token_ttl` s. Refresh tokens
    rotate on every use; presenting a used one again is refused (invalid_grant) and
    revokes the whole grant, its newest refresh token included (replay detection).
    Signing keys and refresh tokens live in `state_dir`, so stop()/restart() on the same
    port is an outage, not a new IdP; restart(clients=...) changes the registrations.
    """

    workdir: Path
    clients: dict[str, OAuthClient]
    users: dict[str, str]
    ttl: int
    access_token_ttl: int
    refresh_token_ttl: int
    access_token_format: Literal["jwt", "opaque"]
    rotate_refresh_token: bool
    trusted_issuers: list[dict[str, Any]] = field(default_factory=list)
    resource: str = "urn:token-refresher:test-api"
    resource_scopes: str = "api:read api:write"
    # More resource servers (RFC 8707 audiences): {uri: "scope list"}.
    resources: dict[str, str] = field(default_factory=dict)
    port: int = 0
    timeout: float = 20.0
    # 127.0.0.1, or the node's bridge address when pods must reach it too.
    host: str = "127.0.0.1"
    _process: _Process | None = field(default=None, repr=False)

    @property
    def issuer(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def basic(self) -> OAuthClient:
        return self.clients["client-basic"]

    @property
    def post(self) -> OAuthClient:
        return self.clients["client-post"]

    @property
    def private_key_jwt(self) -> OAuthClient:
        return self.clients["client-jwt"]

    @property
    def public(self) -> OAuthClient:
        return self.clients["client-public"]

    def config(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "ttl": {
                "ClientCredentials": self.ttl,
                "AccessToken": self.access_token_ttl,
                "IdToken": max(self.access_token_ttl, 60),
                "RefreshToken": self.refresh_token_ttl,
                "Grant": self.refresh_token_ttl,
            },
            "accessTokenFormat": self.access_token_format,
            "resource": self.resource,
            "resourceScopes": self.resource_scopes,
            "resources": self.resources,
            "rotateRefreshToken": self.rotate_refresh_token,
            "clients": [c.oidc_provider_metadata() for c in self.clients.values()],
            "users": [{"username": u, "password": p} for u, p in self.users.items()],
            "trustedIssuers": self.trusted_issuers,
            "stateDir": str(self.state_dir),
        }

    def start(self) -> OidcProvider:
        node = shutil.which("node")
        if node is None:
            raise IdPHarnessError("node is not on PATH: the oidc-provider IdP needs Node.js")
        if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
            raise IdPHarnessError(
                f"{IDP_DIR}/node_modules is missing: run hack/venv.sh (it runs `npm ci` there)"
            )
        keys = self.state_dir / "jwks.json"
        if not keys.exists():
            # Started from pytest, Node 20's generateKeyPairSync sometimes never returns
            # (every thread parked on a futex; one start in ten or so, never from a shell),
            # so the server gets its signing key from here instead of making one.
            self.state_dir.mkdir(parents=True, exist_ok=True)
            key = RSAKey.generate_key(
                2048, parameters={"kid": uuid.uuid4().hex[:16], "alg": "RS256", "use": "sig"}
            )
            keys.write_text(json.dumps({"keys": [key.as_dict(private=True)]}))
        config_path = self.workdir / "oidc-provider.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        argv = [node, str(IDP_DIR / "oidc-server.mjs"), "--config", str(config_path)]
        self._process = _Process("oidc-provider", argv, self.workdir)
        self._process.start()
        ready: dict[str, Any] = {}

        process = self._process

        def printed_ready_line() -> bool:
            line, newline, _ = process.stdout_path.read_text().partition("\n")
            if newline:
                ready.update(json.loads(line))
            return bool(ready)

        where = f"port {self.port}" if self.port else "a free port"
        self._process.wait_ready(
            f"its ready line on stdout (listening on {self.host}, {where})",
            printed_ready_line,
            self.timeout,
        )
        self.port = int(ready["port"])
        return self

    def restart(self, **changes: Any) -> OidcProvider:
        """Stop, apply `changes` to the fields (e.g. clients=..., ttl=...), start on the
        same port with the same keys and tokens."""
        self.stop()
        for name, value in changes.items():
            if name == "clients":
                value = {c.client_id: c for c in value}
            setattr(self, name, value)
        return self.start()

    def password_grant(
        self,
        client: OAuthClient | None = None,
        *,
        username: str = OIDC_USER[0],
        scope: str = "openid offline_access api:read",
    ) -> dict[str, Any]:
        """The token response of the test-only password grant (refresh token included
        when `scope` has offline_access and the client may refresh)."""
        return _post_token(
            self.token_url,
            client or self.basic,
            grant_type="password",
            username=username,
            password=self.users[username],
            scope=scope,
        )

    def refresh_token(self, client: OAuthClient | None = None, **kwargs: Any) -> str:
        """A fresh refresh token for `client` (default client-basic), obtained without a
        browser: what REFRESH_TOKEN_FILE bootstraps from."""
        return str(self.password_grant(client, **kwargs)["refresh_token"])

    def events(self) -> list[dict[str, Any]]:
        """The JSON lines oidc-server.mjs logged on stderr, across restarts."""
        path = self.workdir / "oidc-provider.stderr"
        found = []
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def refresh_token_uses(self) -> dict[str, int]:
        """How often each refresh token (by a short hash) was presented to the token
        endpoint, successfully or not: a count above 1 is a replay the IdP saw."""
        uses: dict[str, int] = {}
        for event in self.events():
            sha = event.get("refresh_token_sha256")
            if sha and event.get("grant_type") == "refresh_token":
                uses[sha] = uses.get(sha, 0) + 1
        return uses

    def revoked_grants(self) -> list[str]:
        """Grants (token families) revoked by replay detection."""
        return [e["grant_id"] for e in self.events() if e.get("event") == "grant.revoked"]

    def jwt_bearer(
        self, assertion: str, client: OAuthClient | None = None, *, scope: str = "api:read"
    ) -> dict[str, Any]:
        """The token response of the RFC 7523 jwt-bearer grant for `assertion`."""
        return _post_token(
            self.token_url,
            client or self.basic,
            grant_type=JWT_BEARER,
            assertion=assertion,
            scope=scope,
        )


def kubernetes_trust(cluster: ControlPlane) -> dict[str, Any]:
    """The cluster's service-account issuer as an entry of `trusted_issuers`, so that
    oidc-provider's jwt-bearer grant accepts its projected tokens (aud = the IdP's issuer
    or token endpoint). The keys are copied now: start the IdP after the cluster."""
    jwks = json.loads(cluster.kubectl("get", "--raw", "/openid/v1/jwks").stdout)
    return {"issuer": cluster.sa_issuer, "jwks": jwks}


class OidcProviderFactory:
    """Starts oidc-provider instances in directories under `base_dir`; close() stops them."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.started: list[OidcProvider] = []

    def start(
        self,
        *,
        ttl: int = 5,
        access_token_ttl: int | None = None,
        refresh_token_ttl: int = 3600,
        clients: Sequence[OAuthClient] | None = None,
        users: Mapping[str, str] | None = None,
        access_token_format: Literal["jwt", "opaque"] = "jwt",
        rotate_refresh_token: bool = True,
        trusted_issuers: Sequence[Mapping[str, Any]] = (),
        resources: Mapping[str, str] | None = None,
        port: int = 0,
        timeout: float = 20.0,
        host: str = "127.0.0.1",
    ) -> OidcProvider:
        workdir = self.base_dir / f"oidc-provider-{len(self.started)}"
        workdir.mkdir(parents=True)
        idp = OidcProvider(
            workdir=workdir,
            clients={c.client_id: c for c in (clients or default_oidc_clients())},
            users=dict(users or dict([OIDC_USER])),
            ttl=ttl,
            access_token_ttl=access_token_ttl or ttl,
            refresh_token_ttl=refresh_token_ttl,
            access_token_format=access_token_format,
            rotate_refresh_token=rotate_refresh_token,
            trusted_issuers=[dict(t) for t in trusted_issuers],
            resources=dict(resources or {}),
            port=port,
            timeout=timeout,
            host=host,
        )
        self.started.append(idp)
        return idp.start()

    __call__ = start

    def close(self) -> None:
        for idp in self.started:
            idp.stop()


@pytest.fixture
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProviderFactory]:
    factory = OidcProviderFactory(tmp_path_factory.mktemp("idp"))
    try:
        yield factory
    finally:
        factory.close()


# --- Dex -----------------------------------------------------------------------------------

# Password of the static Dex user: "alice-password". Dex stores only the bcrypt hash (cost
# 10), made once with Python's crypt module (crypt.METHOD_BLOWFISH, rounds=1024).
DEX_USER = ("alice@example.com", "alice-password")
_DEX_USER_ENTRY = {
    "email": DEX_USER[0],
    "hash": "$2b$10$jRTs2t3uW1f3RB0laqdMXe6.THTu8/qURFO/kQlBUkXRCSskB7stq",
    "username": "alice",
    "userID": "08a8684b-db88-4b73-90a9-3cd1661f5466",
}
DEX_GRANTS = ("authorization_code", "refresh_token", "password", TOKEN_EXCHANGE)


def default_dex_clients() -> list[OAuthClient]:
    return [
        OAuthClient("dex-basic", "client_secret_basic", "dex-basic-secret", DEX_GRANTS),
        OAuthClient("dex-post", "client_secret_post", "dex-post-secret", DEX_GRANTS),
        OAuthClient("dex-public", "none", None, DEX_GRANTS),
    ]


def kubernetes_connector(
    issuer: str, ca_file: Path | str, *, connector_id: str = "kubernetes"
) -> dict[str, Any]:
    """A Dex `oidc` connector trusting a kube-apiserver's service-account issuer, so
    projected service-account tokens can be exchanged for Dex tokens (RFC 8693).

    How the exchange works in Dex v2.41.1 (server/handlers.go handleTokenExchange):
    POST the token endpoint, authenticated as a Dex client, with
    grant_type=urn:ietf:params:oauth:grant-type:token-exchange, connector_id=<this id>
    (Dex-specific and required), subject_token=<the SA token>,
    subject_token_type=urn:ietf:params:oauth:token-type:id_token, and optionally
    requested_token_type (access_token, the default, or id_token) and scope. The answer
    has access_token, issued_token_type, token_type and expires_in, never a refresh token;
    the token's `aud` is the requesting client's id (an `audience` parameter is ignored).

    Only subject_token_type id_token works for Kubernetes tokens: access_token makes Dex
    call the upstream userinfo endpoint (getUserInfo), which an apiserver has not. With
    id_token, Dex checks signature, issuer and expiry but *not the audience*
    (SkipClientIDCheck), so any token of that issuer is accepted. SA tokens carry neither
    `name` nor `email`: the user name is taken from `sub` and no email scope is requested.
    Dex reads the issuer's discovery document when it starts, so the apiserver must be up
    first and allow anonymous discovery (ClusterRole system:service-account-issuer-discovery
    bound to system:unauthenticated, which tests/controlplane.py does).
    """
    return {
        "type": "oidc",
        "id": connector_id,
        "name": "Kubernetes service accounts",
        "config": {
            "issuer": issuer,
            # Unused for token exchange (no audience check), but the connector wants one.
            "clientID": "token-refresher-dex",
            "redirectURI": "http://127.0.0.1/unused",
            "rootCAs": [str(ca_file)],
            "getUserInfo": False,
            "userNameKey": "sub",
            "scopes": ["profile"],
            "insecureSkipEmailVerified": True,
        },
    }


@dataclass
class Dex(_LocalIdP):
    """Dex serving http://127.0.0.1:PORT/dex with memory storage.

    Users log in with the password grant through the local password DB (DEX_USER).
    Access and ID tokens are JWTs living `id_token_ttl` s (expires_in reads one second
    less: Dex truncates). With offline_access a refresh token comes back; it rotates on
    every refresh and the old one is refused at once (reuseInterval 0s unless
    refresh_reuse_interval says otherwise). Memory storage: a restart forgets every
    token and signing key.
    """

    workdir: Path
    binary: Path
    clients: dict[str, OAuthClient]
    id_token_ttl: int
    refresh_reuse_interval: int
    rotate_refresh_tokens: bool
    connectors: list[dict[str, Any]]
    grant_types: tuple[str, ...]
    port: int = field(default_factory=free_port)
    timeout: float = 30.0
    _process: _Process | None = field(default=None, repr=False)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}/dex"

    @property
    def config_path(self) -> Path:
        return self.workdir / "dex.yaml"

    @property
    def basic(self) -> OAuthClient:
        return self.clients["dex-basic"]

    @property
    def post(self) -> OAuthClient:
        return self.clients["dex-post"]

    @property
    def public(self) -> OAuthClient:
        return self.clients["dex-public"]

    def config(self) -> dict[str, Any]:
        static_clients = []
        for c in self.clients.values():
            entry: dict[str, Any] = {"id": c.client_id, "name": c.client_id}
            if c.auth_method == "none":
                entry["public"] = True
            else:
                entry["secret"] = c.client_secret
            entry["redirectURIs"] = ["http://127.0.0.1/callback"]
            static_clients.append(entry)
        return {
            "issuer": self.issuer,
            "storage": {"type": "memory"},  # built with CGO_ENABLED=0: no sqlite3
            "web": {"http": f"127.0.0.1:{self.port}"},
            "logger": {"level": "debug", "format": "json"},
            "oauth2": {
                "grantTypes": list(self.grant_types),
                "responseTypes": ["code"],
                "skipApprovalScreen": True,
                "passwordConnector": "local",
            },
            "expiry": {
                "idTokens": f"{self.id_token_ttl}s",
                "refreshTokens": {
                    "disableRotation": not self.rotate_refresh_tokens,
                    "reuseInterval": f"{self.refresh_reuse_interval}s",
                },
            },
            "enablePasswordDB": True,
            "staticPasswords": [_DEX_USER_ENTRY],
            "staticClients": static_clients,
            "connectors": self.connectors,
        }

    def start(self) -> Dex:
        # JSON is YAML: Dex reads this file with a YAML parser.
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        self._process = _Process(
            "dex", [str(self.binary), "serve", str(self.config_path)], self.workdir
        )
        self._process.start()
        self._process.wait_ready(
            f"its discovery document at {self.discovery_url}",
            lambda: http_ok(self.discovery_url),
            self.timeout,
        )
        return self

    def restart(self) -> Dex:
        """Stop and start on the same port; memory storage, so every token is forgotten."""
        self.stop()
        return self.start()

    def password_grant(
        self,
        client: OAuthClient | None = None,
        *,
        username: str = DEX_USER[0],
        password: str = DEX_USER[1],
        scope: str = "openid offline_access",
    ) -> dict[str, Any]:
        return _post_token(
            self.token_url,
            client or self.basic,
            grant_type="password",
            username=username,
            password=password,
            scope=scope,
        )

    def refresh_token(self, client: OAuthClient | None = None, **kwargs: Any) -> str:
        return str(self.password_grant(client, **kwargs)["refresh_token"])

    def token_exchange(
        self,
        subject_token: str,
        *,
        connector_id: str = "kubernetes",
        client: OAuthClient | None = None,
        subject_token_type: str = ID_TOKEN_TYPE,
        requested_token_type: str = ACCESS_TOKEN_TYPE,
        scope: str = "openid",
    ) -> dict[str, Any]:
        """Exchange `subject_token` through connector `connector_id` (RFC 8693)."""
        return _post_token(
            self.token_url,
            client or self.basic,
            grant_type=TOKEN_EXCHANGE,
            connector_id=connector_id,
            subject_token=subject_token,
            subject_token_type=subject_token_type,
            requested_token_type=requested_token_type,
            scope=scope,
        )


def dex_binary() -> Path:
    """The Dex binary hack/tools.sh built; $DEX overrides. Fails (never skips) without."""
    path = Path(os.environ["DEX"]) if os.environ.get("DEX") else locate_tools().dex
    if not path.is_file():
        raise IdPHarnessError(
            f"the Dex binary {path} does not exist: run hack/tools.sh (it builds Dex "
            "v2.41.1 from its Go module into a cache outside the repository)"
        )
    return path


class DexFactory:
    """Starts Dex instances in directories under `base_dir`; close() stops them."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.started: list[Dex] = []

    def start(
        self,
        *,
        id_token_ttl: int = 10,
        extra_connectors: Sequence[Mapping[str, Any]] | None = None,
        clients: Sequence[OAuthClient] | None = None,
        refresh_reuse_interval: int = 0,
        rotate_refresh_tokens: bool = True,
        grant_types: Sequence[str] = DEX_GRANTS,
        timeout: float = 30.0,
    ) -> Dex:
        workdir = self.base_dir / f"dex-{len(self.started)}"
        workdir.mkdir(parents=True)
        dex = Dex(
            workdir=workdir,
            binary=dex_binary(),
            clients={c.client_id: c for c in (clients or default_dex_clients())},
            id_token_ttl=id_token_ttl,
            refresh_reuse_interval=refresh_reuse_interval,
            rotate_refresh_tokens=rotate_refresh_tokens,
            connectors=[dict(c) for c in extra_connectors or ()],
            grant_types=tuple(grant_types),
            timeout=timeout,
        )
        self.started.append(dex)
        # The port was free when picked, but another process may take it before Dex binds:
        # then Dex exits at once, and one more try on another port is enough.
        try:
            return dex.start()
        except IdPHarnessError as exc:
            if "address already in use" not in str(exc):
                raise
            dex.port = free_port()
            return dex.start()

    __call__ = start

    def close(self) -> None:
        for dex in self.started:
            dex.stop()


@pytest.fixture
def dex_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DexFactory]:
    factory = DexFactory(tmp_path_factory.mktemp("dex"))
    try:
        yield factory
    finally:
        factory.close()
