"""The `family-secret` annotation: replicas of a workload share one refresh-token family
through a Secret (docs/family.md). The operator only renders the setting; it gets no
permission of its own, and the sidecar never sees anything the app could."""

from __future__ import annotations

from tests.operator.test_patch import P, denial, env, injected, make_pod, mounts, sidecar

REFRESH = {
    P + "inject": "true",
    P + "issuer": "https://idp.example/realms/prod",
    P + "client-id": "billing",
    P + "client-auth": "none",
    P + "grant": "refresh_token",
    P + "refresh-token": "billing-oauth/refresh",
}


def test_the_family_secret_annotation_becomes_the_sidecar_setting() -> None:
    pod = injected(make_pod({**REFRESH, P + "family-secret": "billing-oauth"}))
    container = sidecar(pod)
    assert env(container)["TOKEN_REFRESHER_FAMILY_SECRET"] == "billing-oauth"
    # The app containers get the token volume only: no refresh token, no family Secret.
    assert set(mounts(pod["spec"]["containers"][0])) == {"token-refresher-token"}


def test_without_the_annotation_a_pod_keeps_its_refresh_token_to_itself() -> None:
    container = sidecar(injected(make_pod(REFRESH)))
    assert "TOKEN_REFRESHER_FAMILY_SECRET" not in env(container)


def test_a_bad_family_secret_is_denied_naming_the_annotation() -> None:
    assert denial({**REFRESH, P + "family-secret": "Billing_OAuth"}) == [
        "token-refresher.io/family-secret: must be the name of a Secret in the pod's "
        "namespace, such as billing-oauth (got 'Billing_OAuth')"
    ]


def test_a_family_needs_the_refresh_token_grant() -> None:
    annotations = {**REFRESH, P + "family-secret": "billing-oauth"}
    del annotations[P + "grant"], annotations[P + "refresh-token"]
    annotations[P + "client-secret"] = "billing-oauth/secret"
    del annotations[P + "client-auth"]
    assert denial(annotations) == [
        "token-refresher.io/family-secret: only with token-refresher.io/grant=refresh_token "
        "(a family is a shared refresh token), not client_credentials"
    ]
