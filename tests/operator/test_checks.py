"""The gate's verdicts: whose token it is (check_identity), whether the pod is ours (check_pod)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.operator.test_report import body
from token_refresher_operator.checks import (
    INJECTED_ANNOTATION,
    POD_NAME_EXTRA,
    POD_UID_EXTRA,
    Accept,
    Reject,
    TokenReviewStatus,
    check_identity,
    check_pod,
)
from token_refresher_operator.manifests import Pod
from token_refresher_operator.report import parse_report

AUD = "token-refresher-report"
UID = "e3631b76-7c92-4ac7-ac2f-1f0129a1bce7"
REPORT = SimpleNamespace(namespace="billing", pod="api-1", uid=UID)


def review(
    *,
    authenticated: bool = True,
    username: str = "system:serviceaccount:billing:app",
    pod: list[str] | None = None,
    uid: list[str] | None = None,
    audiences: list[str] | None = None,
) -> TokenReviewStatus:
    extra: dict[str, list[str]] = {"authentication.kubernetes.io/credential-id": ["JTI=x"]}
    if pod != []:
        extra[POD_NAME_EXTRA] = pod or ["api-1"]
    if uid != []:
        extra[POD_UID_EXTRA] = uid or [UID]
    status: TokenReviewStatus = {
        "user": {"username": username, "extra": extra, "groups": ["system:serviceaccounts"]},
        "audiences": [AUD] if audiences is None else audiences,
    }
    if authenticated:
        status["authenticated"] = True
    return status


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (review(), Accept("app")),
        (review(audiences=["other", AUD]), Accept("app")),
        (
            review(authenticated=False),
            Reject(401, "invalid_token", "the bearer token is not valid"),
        ),
        ({}, Reject(401, "invalid_token", "the bearer token is not valid")),
        (
            {"error": "[invalid bearer token, token audiences [...] is invalid]", "user": {}},
            Reject(401, "invalid_token", "the bearer token is not valid"),
        ),
        (
            review(audiences=[]),
            Reject(401, "wrong_audience", f"the bearer token is not for audience {AUD}"),
        ),
        (
            review(audiences=["api"]),
            Reject(401, "wrong_audience", f"the bearer token is not for audience {AUD}"),
        ),
        (
            review(username="alice"),
            Reject(403, "not_service_account", "the token is not a service-account token"),
        ),
        (
            review(username="system:serviceaccount:billing"),
            Reject(403, "not_service_account", "the token is not a service-account token"),
        ),
        (
            review(username="system:serviceaccount:billing:app:x"),
            Reject(403, "not_service_account", "the token is not a service-account token"),
        ),
        (
            review(username="system:serviceaccount:other:app"),
            Reject(403, "wrong_namespace", "the token is not of namespace billing"),
        ),
        (review(pod=[]), Reject(403, "not_pod_bound", "the token is not bound to a pod")),
        (review(uid=[]), Reject(403, "not_pod_bound", "the token is not bound to a pod")),
        (review(pod=["api-2"]), Reject(403, "wrong_pod", "the token is not of pod api-1")),
        (
            review(pod=["api-1", "api-2"]),
            Reject(403, "wrong_pod", "the token is not of pod api-1"),
        ),
        (
            review(uid=["0000"]),
            Reject(403, "wrong_uid", f"the token is not of pod api-1 uid {UID}"),
        ),
    ],
)
def test_identity_verdicts(status: TokenReviewStatus, expected: object) -> None:
    assert check_identity(review=status, report=REPORT, audience=AUD) == expected


def pod(
    *, uid: str = UID, sa: str | None = "app", annotations: dict[str, str] | None = None
) -> Pod:
    spec = {"serviceAccountName": sa} if sa is not None else {}
    return {
        "metadata": {
            "name": "api-7d4b9",
            "namespace": "billing",
            "uid": uid,
            "annotations": {INJECTED_ANNOTATION: "true"} if annotations is None else annotations,
        },
        "spec": spec,  # type: ignore[typeddict-item]
    }


@pytest.mark.parametrize(
    ("the_pod", "service_account", "expected"),
    [
        (pod(), "app", Accept("app")),
        (pod(sa=None), "default", Accept("default")),
        (None, "app", Reject(403, "pod_not_found", "pod billing/api-7d4b9 not found")),
        (pod(uid="other"), "app", Reject(403, "wrong_uid", "pod api-7d4b9 has another uid")),
        (
            pod(sa="other"),
            "app",
            Reject(403, "wrong_service_account", "pod api-7d4b9 runs as another account"),
        ),
        (
            pod(annotations={}),
            "app",
            Reject(
                403,
                "not_injected",
                "pod api-7d4b9 has no token-refresher.io/injected=true annotation",
            ),
        ),
        (
            pod(annotations={INJECTED_ANNOTATION: "false"}),
            "app",
            Reject(
                403,
                "not_injected",
                "pod api-7d4b9 has no token-refresher.io/injected=true annotation",
            ),
        ),
    ],
)
def test_the_pod_must_be_the_tokens_and_injected(
    the_pod: Pod | None, service_account: str, expected: object
) -> None:
    report = parse_report(body())
    assert check_pod(pod=the_pod, report=report, service_account=service_account) == expected
