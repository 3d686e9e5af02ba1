"""Several tokens per pod, on the real node: one sidecar keeps three files fresh for an
app that calls three APIs — two audiences (RFC 8707 resources) at one oidc-provider and a
partner API at a second oidc-provider with its own client — each on its own schedule.
Stopping the partner's IdP shows up as Events naming that token only, the other two keep
refreshing, and /readyz turns 503 only once the partner's token has actually expired."""

from __future__ import annotations

import calendar
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.workloads import (
    RELEASE_NAMESPACE,
    RESOURCE_SERVER,
    P,
    Release,
    annotations,
    app_calls,
    bad_calls,
    events_of,
    installed,
    oauth_secret,
    pod_spec,
    pods_of,
    wait_ready,
)
from tests.idp import OAuthClient, OidcProvider, OidcProviderFactory, default_oidc_clients
from tests.node import HOST_IP, Node, wait_until
from tests.support.secrets import secrets_in

pytestmark = [pytest.mark.node, pytest.mark.idp]

PAYMENTS = "urn:token-refresher:payments"
PARTNER = OAuthClient("partner-client", "client_secret_basic", "partner-client-secret")
# Lifetimes in seconds. The default token is refreshed at 0.5 of 10 s (the workloads'
# refresh-ratio), payments (its own refresh-ratio) at 0.3 of 10 s, the partner's at 0.5
# of 20 s: three schedules, each leaving seconds of margin on a loaded machine.
TTL, PARTNER_TTL = 10, 20
SIDECAR_PORT = 8099


@pytest.fixture(scope="module")
def release(node: Node) -> Iterator[Release]:
    with installed(node) as release:
        yield release


@pytest.fixture(scope="module")
def idps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OidcProvider, OidcProvider]]:
    factory = OidcProviderFactory(tmp_path_factory.mktemp("e2e-named-idp"))
    try:
        # Opaque tokens, so each IdP's introspection says whether a token is active and
        # for which audience.
        main = factory.start(
            ttl=TTL,
            host=HOST_IP,
            access_token_format="opaque",
            clients=[*default_oidc_clients(), RESOURCE_SERVER],
            resources={PAYMENTS: "api:read"},
        )
        partner = factory.start(
            ttl=PARTNER_TTL,
            host=HOST_IP,
            access_token_format="opaque",
            clients=[PARTNER, RESOURCE_SERVER],
        )
        yield main, partner
    finally:
        factory.close()


def _billing(node: Node, namespace: str, main: OidcProvider, partner: OidcProvider) -> None:
    oauth_secret(node, namespace, main.basic)
    node.kubectl(
        "-n",
        namespace,
        "create",
        "secret",
        "generic",
        "partner-oauth",
        f"--from-literal=secret={PARTNER.client_secret}",
    )
    notes = {
        **annotations(main, main.basic),  # the default token, as today
        # payments: the same IdP and client, another audience and schedule.
        P + "resource.payments": PAYMENTS,
        P + "refresh-ratio.payments": "0.3",
        # partner: another IdP, so its own client and secret (nothing is inherited).
        P + "issuer.partner": partner.issuer,
        P + "client-id.partner": PARTNER.client_id,
        P + "client-secret.partner": "partner-oauth/secret",
    }
    rs = f"{RESOURCE_SERVER.client_id}:{RESOURCE_SERVER.client_secret}"
    checks = [
        ["default", "TOKEN_FILE", f"{main.issuer}/token/introspection", rs],
        ["payments", "TOKEN_FILE_PAYMENTS", f"{main.issuer}/token/introspection", rs],
        ["partner", "TOKEN_FILE_PARTNER", f"{partner.issuer}/token/introspection", rs],
    ]
    spec = pod_spec(node, main)
    spec["containers"][0]["env"].append({"name": "CHECKS", "value": json.dumps(checks)})
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "billing", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "billing"}},
            "template": {
                "metadata": {"labels": {"app": "billing"}, "annotations": notes},
                "spec": spec,
            },
        },
    }
    node.kubectl("apply", "-f", "-", input=json.dumps(deployment))
    wait_ready(node, namespace, "billing")


def _per_token(calls: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        out.setdefault(call.get("token", "default"), []).append(call)
    return out


def _changes(calls: list[dict[str, Any]]) -> list[float]:
    """When the app first read each new token: one instant per refresh it saw."""
    seen: set[str] = set()
    at: list[float] = []
    for call in calls:
        if "sha" in call and call["sha"] not in seen:
            seen.add(call["sha"])
            at.append(call["t"])
    return at[1:]


def _sidecar(pod: dict[str, Any], path: str) -> tuple[int, dict[str, Any] | str]:
    url = f"http://{pod['status']['podIP']}:{SIDECAR_PORT}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            code, body = resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        code, body = exc.code, exc.read().decode()
    try:
        return code, json.loads(body)
    except ValueError:
        return code, body


def _events(node: Node, namespace: str, pod: str) -> list[dict[str, Any]]:
    """The pod's Events from token-refresher (not the kubelet's)."""
    events = events_of(node, namespace, pod)
    return [e for e in events if e.get("reportingComponent") == "token-refresher"]


def _epoch(rfc3339: str) -> float:
    return float(calendar.timegm(time.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ")))


# Three refreshes of a 12 s token, an outage to its expiry and a recovery behind a
# backoff of up to 60 s: more than the suite's 180 s on a loaded machine.
@pytest.mark.timeout(600)
def test_three_tokens_from_two_idps_each_on_its_own_schedule_and_failing_alone(
    node: Node,
    node_namespace: str,
    release: Release,
    idps: tuple[OidcProvider, OidcProvider],
) -> None:
    main, partner = idps
    _billing(node, node_namespace, main, partner)
    [pod] = pods_of(node, node_namespace, "app=billing")
    name = pod["metadata"]["name"]

    # One sidecar, three files, three env vars in the app.
    [sidecar] = pod["spec"]["initContainers"]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app"]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["TOKEN_FILE"].endswith("/token")
    assert env["TOKEN_FILE_PAYMENTS"].endswith("/payments")
    assert env["TOKEN_FILE_PARTNER"].endswith("/partner")
    # The partner's secret is mounted into the sidecar only.
    secret_volumes = {
        v["name"] for v in pod["spec"]["volumes"] if v.get("secret", {}).get("secretName")
    }
    assert len(secret_volumes) == 2
    assert not {m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]} & secret_volumes
    assert secret_volumes <= {m["name"] for m in sidecar["volumeMounts"]}

    # Three refreshes of every token, each accepted by its own IdP for its own audience.
    def refreshed() -> bool:
        calls = app_calls(node, node_namespace, name)
        bad = bad_calls(calls)
        assert not bad, f"the app read a missing, expired or rejected token: {bad[:3]}"
        per = _per_token(calls)
        return set(per) == {"default", "payments", "partner"} and all(
            len(_changes(c)) >= 3 for c in per.values()
        )

    wait_until("three refreshes of each of the three tokens", refreshed, PARTNER_TTL * 8)
    per = _per_token(app_calls(node, node_namespace, name))
    auds = {token: {c.get("aud") for c in calls if c.get("active")} for token, calls in per.items()}
    assert auds["default"] == {main.resource}
    assert auds["payments"] == {PAYMENTS}
    assert auds["partner"] == {partner.resource}
    shas = {token: {c["sha"] for c in calls if "sha" in c} for token, calls in per.items()}
    assert not shas["default"] & shas["payments"]
    # Own schedules: the tokens change at different instants, and the one refreshed at 0.3
    # of 10 s more often than the one refreshed at 0.5 of 20 s (about 3 s against 10 s).
    instants = {token: set(_changes(calls)) for token, calls in per.items()}
    assert instants["default"] != instants["payments"] != instants["partner"]
    code, status = _sidecar(pod, "/status")
    assert code == 200
    assert isinstance(status, dict)
    assert set(status["tokens"]) == {"default", "payments", "partner"}
    counts = {t: doc["refresh_count"] for t, doc in status["tokens"].items()}
    assert counts["payments"] > counts["partner"], counts
    assert _sidecar(pod, "/readyz")[0] == 200

    # The partner's IdP goes away.
    partner.stop()
    stopped_at = time.time()
    failed = wait_until(
        "a TokenRefreshFailed Event naming the partner token",
        lambda: [
            e for e in _events(node, node_namespace, name) if e["reason"] == "TokenRefreshFailed"
        ],
        PARTNER_TTL * 6,
    )
    # /readyz stays 200 while the partner's last token is valid, and is 503 once it expired.
    samples: list[tuple[float, int, float]] = []

    def expired() -> bool:
        _code, status = _sidecar(pod, "/status")
        assert isinstance(status, dict)
        expires = status["tokens"]["partner"]["expires_at"]
        ready = _sidecar(pod, "/readyz")[0]
        samples.append((time.time(), ready, _epoch(expires) if expires else 0.0))
        return ready == 503

    wait_until("/readyz 503 once the partner's token expired", expired, PARTNER_TTL * 6, every=0.5)
    # Second-resolution expiry, one clock: a second of slack either way, no more.
    for at, ready, expires in samples:
        if ready == 503:
            assert expires == 0.0 or at >= expires - 1, ("503 before expiry", at, expires)
        else:
            assert expires, ("200 with no token", at)
            assert at < expires + 1, ("200 after expiry", at, expires)
    wait_until(
        "a TokenExpired Event naming the partner token",
        lambda: [e for e in _events(node, node_namespace, name) if e["reason"] == "TokenExpired"],
        PARTNER_TTL * 6,
    )
    events = _events(node, node_namespace, name)
    assert events
    assert failed
    for event in events:
        assert event["message"].startswith("token partner: "), event["message"]
    # The other two kept refreshing through the outage, with no Event of their own.
    during = _per_token(app_calls(node, node_namespace, name))
    for token in ("default", "payments"):
        assert [t for t in _changes(during[token]) if t > stopped_at + 1], token
        assert not bad_calls(during[token]), token

    # The partner's IdP comes back: that token recovers (the backoff is at most 60 s).
    partner.start()
    wait_until(
        "a TokenRefreshRecovered Event naming the partner token",
        lambda: [
            e for e in _events(node, node_namespace, name) if e["reason"] == "TokenRefreshRecovered"
        ],
        150,
    )
    wait_until("/readyz 200 again", lambda: _sidecar(pod, "/readyz")[0] == 200, 60)
    # No token or secret reached an Event or a log.
    seen = json.dumps(_events(node, node_namespace, name))
    seen += node.kubectl(
        "-n", node_namespace, "logs", name, "-c", "token-refresher", check=False
    ).stdout
    seen += node.kubectl(
        "-n",
        RELEASE_NAMESPACE,
        "logs",
        "-l",
        "app.kubernetes.io/component=operator",
        "--tail=-1",
        check=False,
    ).stdout
    assert PARTNER.client_secret
    assert PARTNER.client_secret not in seen
    assert main.basic.client_secret
    assert main.basic.client_secret not in seen
    assert not secrets_in(seen)
