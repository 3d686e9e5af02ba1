"""The gate a report walks, pure: whose token it is, and whether the pod is one of ours.

A report is believed only from the pod it is about (DESIGN, "Security stance"). The
kube-apiserver tells us whose token it is: a TokenReview of a projected token bound to a
pod returns the service account as the username and the pod's name and uid in
`user.extra`. `check_identity` compares that with what the report claims; `check_pod`
then checks the pod itself: it must still exist with that uid and service account, and
carry the injection marker. Each answers `Accept` or a `Reject` that is the HTTP answer.
`reportserver` asks the API for the review and the pod and calls these in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypedDict

from .annotations import INJECTED
from .manifests import Pod
from .report import Report

__all__ = [
    "INJECTED_ANNOTATION",
    "POD_NAME_EXTRA",
    "POD_UID_EXTRA",
    "Accept",
    "Decision",
    "Reject",
    "TokenReviewStatus",
    "UserInfo",
    "check_identity",
    "check_pod",
]

INJECTED_ANNOTATION: Final = INJECTED  # set by the webhook on every pod it mutated
POD_NAME_EXTRA: Final = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA: Final = "authentication.kubernetes.io/pod-uid"
_SA_PREFIX: Final = "system:serviceaccount:"


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]


class TokenReviewStatus(TypedDict, total=False):
    """`status` of an authentication.k8s.io/v1 TokenReview, as the API returns it."""

    authenticated: bool
    user: UserInfo
    audiences: list[str]
    error: str


@dataclass(frozen=True)
class Accept:
    """The token belongs to the pod the report is about, running as `service_account`."""

    service_account: str


@dataclass(frozen=True)
class Reject:
    """Refuse the report: HTTP `status`, a short `reason` code (metrics) and a sentence."""

    status: int
    reason: str
    message: str


Decision = Accept | Reject


def check_identity(*, review: TokenReviewStatus, report: Report, audience: str) -> Decision:
    """Accept only a token of a service account of the report's namespace, bound to the
    report's pod (name and uid), issued for `audience`."""
    if not review.get("authenticated"):
        return Reject(401, "invalid_token", "the bearer token is not valid")
    if audience not in review.get("audiences", []):
        # The apiserver checks spec.audiences itself; an empty list back means an
        # authenticator that ignores audiences, which must not pass for ours.
        return Reject(401, "wrong_audience", f"the bearer token is not for audience {audience}")
    user = review.get("user", {})
    username = user.get("username", "")
    if not username.startswith(_SA_PREFIX) or username.count(":") != 3:
        return Reject(403, "not_service_account", "the token is not a service-account token")
    namespace, _, service_account = username[len(_SA_PREFIX) :].partition(":")
    if namespace != report.namespace:
        return Reject(403, "wrong_namespace", f"the token is not of namespace {report.namespace}")
    extra = user.get("extra", {})
    pod_names = extra.get(POD_NAME_EXTRA, [])
    pod_uids = extra.get(POD_UID_EXTRA, [])
    if not pod_names or not pod_uids:
        return Reject(403, "not_pod_bound", "the token is not bound to a pod")
    if pod_names != [report.pod]:
        return Reject(403, "wrong_pod", f"the token is not of pod {report.pod}")
    if pod_uids != [report.uid]:
        return Reject(403, "wrong_uid", f"the token is not of pod {report.pod} uid {report.uid}")
    return Accept(service_account=service_account)


def check_pod(*, pod: Pod | None, report: Report, service_account: str) -> Decision:
    """The pod must still be the one the token was bound to, and be one we injected."""
    if pod is None:
        return Reject(403, "pod_not_found", f"pod {report.namespace}/{report.pod} not found")
    meta = pod.get("metadata", {})
    if meta.get("uid") != report.uid:
        return Reject(403, "wrong_uid", f"pod {report.pod} has another uid")
    if pod.get("spec", {}).get("serviceAccountName", "default") != service_account:
        return Reject(403, "wrong_service_account", f"pod {report.pod} runs as another account")
    if meta.get("annotations", {}).get(INJECTED_ANNOTATION) != "true":
        return Reject(
            403, "not_injected", f"pod {report.pod} has no {INJECTED_ANNOTATION}=true annotation"
        )
    return Accept(service_account=service_account)
