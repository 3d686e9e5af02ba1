"""The `/mutate` admission webhook: a kopf handler over the pure `patch.build_patch`.

Two pieces. `Injector.mutate` is the kopf `@on.mutate` handler: it asks `build_patch` for
the operations and hands them to kopf, or denies the pod (HTTP 400 in the admission
status) with the annotation problems, so a pod is either fully injected or not created.
`MutateServer` is kopf's HTTPS webhook server with two additions: the contract's URL path
`/mutate` reaches the handler (kopf routes by handler id, so it would otherwise expect
`/inject`), and every admission call is counted and logged, which is how the tests prove
that the apiserver never calls us for pods that did not opt in. A body that is not an
AdmissionReview the apiserver could have sent (`malformed_review`) is answered 400 with
the reason before kopf sees it: kopf would fail on it with a 500 and a traceback.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp.web
import jsonpatch
import kopf

from token_refresher_operator.config import ClusterConfig, OperatorSettings
from token_refresher_operator.errors import AnnotationError
from token_refresher_operator.manifests import JsonPatchOp, Pod
from token_refresher_operator.patch import build_patch, skip_reason

__all__ = [
    "HANDLER_ID",
    "URL_PATH",
    "AdmissionStats",
    "Injector",
    "MutateServer",
    "malformed_review",
]

logger = logging.getLogger(__name__)

HANDLER_ID = "inject"
URL_PATH = "/mutate"


@dataclass
class AdmissionStats:
    """Counters of admission calls, shown on /healthz (the kopf probe `admission`)."""

    requests: int = 0
    injected: int = 0
    denied: int = 0
    skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "injected": self.injected,
            "denied": self.denied,
            "skipped": self.skipped,
        }


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
    for key in ("object", "oldObject"):
        body = request.get(key)
        if body is not None and not isinstance(body.get("metadata", {}), dict):
            return f"request.{key}.metadata must be an object"
    return None


def _apply_ops(body: dict[str, Any], *, ops: list[JsonPatchOp]) -> None:
    # kopf diffs the body before and after its patch functions to build the JSON Patch it
    # returns to the apiserver; applying our operations here makes that diff equal them.
    jsonpatch.apply_patch(body, cast(list[dict[str, Any]], ops), in_place=True)


@dataclass
class Injector:
    """Holds what the webhook needs; `mutate` is registered with kopf."""

    settings: OperatorSettings
    config: ClusterConfig
    stats: AdmissionStats = field(default_factory=AdmissionStats)

    async def mutate(
        self,
        *,
        body: kopf.Body,
        patch: kopf.Patch,
        dryrun: bool,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        pod = cast(Pod, copy.deepcopy(dict(body)))
        meta = pod.get("metadata", {})
        namespace = meta.get("namespace", "")
        name = meta.get("name") or f"{meta.get('generateName', '')}*"
        dry = " (dry run)" if dryrun else ""
        reason = skip_reason(
            pod=pod, namespace=namespace, operator_namespace=self.settings.namespace
        )
        if reason is not None:
            self.stats.skipped += 1
            logger.info(f"pod {namespace}/{name}: no injection: {reason}{dry}")
            return
        try:
            ops = build_patch(
                pod=pod,
                namespace=namespace,
                config=self.config,
                operator_namespace=self.settings.namespace,
                report_audience=self.settings.report_audience,
            )
        except AnnotationError as exc:
            self.stats.denied += 1
            logger.info(f"pod {namespace}/{name}: denied{dry}: {exc.message}")
            raise kopf.AdmissionError(exc.message, code=400) from None
        self.stats.injected += 1
        patch.fns.append(functools.partial(_apply_ops, ops=ops))
        logger.info(f"pod {namespace}/{name}: injecting the sidecar ({len(ops)} operations){dry}")


ClientConfigHook = Callable[[kopf.WebhookClientConfig], Awaitable[None]]


class MutateServer(kopf.WebhookServer):
    """kopf's HTTPS webhook server, serving the handler at `/mutate` and counting calls.

    Certificate files are reloaded by kopf itself when their content changes (checked
    every `file_check_interval` seconds; the listener restarts with the new pair).
    `on_client_config` runs with every client config the server yields (the first one
    and one per certificate renewal): DEV mode registers the webhook configuration there.
    """

    def __init__(
        self,
        *,
        stats: AdmissionStats,
        on_client_config: ClientConfigHook | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stats = stats
        self.on_client_config = on_client_config

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        stats = self.stats

        async def routed(request: Any, *, webhook: str | None = None, **kwargs: Any) -> Any:
            problem = malformed_review(request)
            if problem is not None:
                logger.warning("refused a malformed admission review: %s", problem)
                raise aiohttp.web.HTTPBadRequest(text=f"not an AdmissionReview: {problem}")
            stats.requests += 1
            payload = request.get("request", {}) if isinstance(request, dict) else {}
            obj = payload.get("object") or {}
            meta = obj.get("metadata", {}) if isinstance(obj, dict) else {}
            name = payload.get("name") or meta.get("name") or f"{meta.get('generateName', '')}*"
            logger.info(
                "admission request %d: %s %s %s/%s%s",
                stats.requests,
                payload.get("operation", "?"),
                (payload.get("resource") or {}).get("resource", "?"),
                payload.get("namespace", ""),
                name,
                " (dry run)" if payload.get("dryRun") else "",
            )
            if webhook not in (URL_PATH.strip("/"), HANDLER_ID):
                # kopf would answer "allowed" with no handler run: a silently
                # un-injected pod. Deny instead, so a misrouted configuration shows.
                return {
                    "apiVersion": request.get("apiVersion", "admission.k8s.io/v1"),
                    "kind": "AdmissionReview",
                    "response": {
                        "uid": payload.get("uid", ""),
                        "allowed": False,
                        "status": {
                            "code": 404,
                            "message": f"token-refresher serves {URL_PATH}, not /{webhook}",
                        },
                    },
                }
            return await fn(request, webhook=HANDLER_ID, **kwargs)

        async for client_config in super().__call__(cast(kopf.WebhookFn, routed)):
            if self.on_client_config is not None:
                await self.on_client_config(client_config)
            yield client_config
