"""The AdmissionReview envelope (admission.k8s.io/v1): checking a request, shaping an answer.

The webhook's pure edges: `malformed_review` says why a body is not a request the
apiserver could have sent (answered 400 before anything else reads it), `answer` wraps
a decision for the request's uid, and `patch_answer` carries the JSON Patch, base64 and
compact, as the API wants it.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from token_refresher_operator.manifests import JsonPatchOp

__all__ = ["answer", "malformed_review", "patch_answer"]

_REVIEW_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


def malformed_review(review: object) -> str | None:
    """Why `review` is not an AdmissionReview request the apiserver could send, or None.

    Only the envelope is checked: the pod inside comes from the apiserver, which has
    already decoded it into a typed object.
    """
    if not isinstance(review, dict):
        return f"the body is a JSON {type(review).__name__}, not an object"
    kind, version = review.get("kind"), review.get("apiVersion")
    if kind != "AdmissionReview":
        return f"kind must be AdmissionReview (got {str(kind)[:64]!r})"
    if version not in _REVIEW_VERSIONS:
        allowed = " or ".join(_REVIEW_VERSIONS)
        return f"apiVersion must be {allowed} (got {str(version)[:64]!r})"
    request = review.get("request")
    if not isinstance(request, dict):
        return "request is missing or not an object"
    if not isinstance(request.get("uid"), str) or not request["uid"]:
        return "request.uid is missing"
    for key in ("resource", "object", "oldObject"):
        if request.get(key) is not None and not isinstance(request[key], dict):
            return f"request.{key} must be an object"
    if request.get("object") is None:
        return "request.object is missing: the pod to admit"
    for key in ("object", "oldObject"):
        body = request.get(key)
        if body is not None and not isinstance(body.get("metadata", {}), dict):
            return f"request.{key}.metadata must be an object"
    return None


def answer(review: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": {"uid": review["request"]["uid"], **answer},
    }


def patch_answer(ops: list[JsonPatchOp]) -> dict[str, Any]:
    # Compact: the apiserver decodes it once per pod; spaces would only cost bytes.
    text = json.dumps(ops, separators=(",", ":"))
    patch = base64.b64encode(text.encode()).decode("ascii")
    return {"allowed": True, "patchType": "JSONPatch", "patch": patch}
