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

A denied pod is its author's mistake, not the operator's: it is logged as one warning
naming the pod and the annotation, and kopf's own `[ERROR] Webhook 'inject' failed
permanently` line about the same denial is filtered out (`QuietDenials`).
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp.web
import jsonpatch
import kopf

from token_refresher_operator.config import ClusterConfig, OperatorSettings
from token_refresher_operator.errors import AnnotationError
from token_refresher_operator.manifests import JsonPatchOp, Pod
from token_refresher_operator.metrics import AdmissionResult, OperatorMetrics
from token_refresher_operator.patch import build_patch, skip_reason
from token_refresher_operator.reportca import ReportCA

__all__ = [
    "HANDLER_ID",
    "URL_PATH",
    "AdmissionStats",
    "Injector",
    "MutateServer",
    "QuietDenials",
    "malformed_review",
]

logger = logging.getLogger(__name__)
_log = logger  # `mutate` receives kopf's per-object logger as `logger`

HANDLER_ID = "inject"
URL_PATH = "/mutate"


@dataclass
class AdmissionStats:
    """Counters of admission calls, shown on /healthz (the kopf probe `admission`)."""

    requests: int = 0
    injected: int = 0
    denied: int = 0
    skipped: int = 0
    errors: int = 0
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics, repr=False)

    def count(self, result: AdmissionResult) -> None:
        name = _FIELD[result]
        setattr(self, name, getattr(self, name) + 1)
        self.metrics.admissions.labels(result).inc()

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "injected": self.injected,
            "denied": self.denied,
            "skipped": self.skipped,
            "errors": self.errors,
        }


_FIELD: dict[AdmissionResult, str] = {
    "injected": "injected",
    "skipped": "skipped",
    "denied": "denied",
    "error": "errors",
}


class QuietDenials(logging.Filter):
    """Drops kopf's ERROR line about a denial that `Injector` has already logged.

    kopf logs every `AdmissionError` as `Webhook 'inject' failed permanently: ...` at
    ERROR, as if the operator had failed. Only our handler raises it under that id, and
    only after logging the denial itself, so the record says nothing new. Install it on
    kopf's `kopf.objects` logger.
    """

    PREFIX = f"Webhook {HANDLER_ID!r} failed permanently: "

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.PREFIX)


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
    # Where sidecars find the CA of /report when the config gives none (cert-manager).
    report_ca: ReportCA | None = None

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
            self.stats.count("skipped")
            logger.info(f"pod {namespace}/{name}: no injection: {reason}{dry}")
            return
        try:
            ops = build_patch(
                pod=pod,
                namespace=namespace,
                config=self._config(),
                operator_namespace=self.settings.namespace,
                report_audience=self.settings.report_audience,
            )
        except AnnotationError as exc:
            self.stats.count("denied")
            # The pod's author made a mistake (or, for the lines saying so, the operator's
            # configuration is wrong): one line, with the pod and the annotation.
            level = logging.ERROR if exc.operator_fault else logging.WARNING
            _log.log(level, "pod %s/%s denied%s: %s", namespace, name, dry, exc.message)
            raise kopf.AdmissionError(exc.message, code=400) from None
        except Exception:
            self.stats.count("error")
            raise
        self.stats.count("injected")
        patch.fns.append(functools.partial(_apply_ops, ops=ops))
        logger.info(f"pod {namespace}/{name}: injecting the sidecar ({len(ops)} operations){dry}")

    def _config(self) -> ClusterConfig:
        if self.report_ca is None or self.config.report is None:
            return self.config
        pem = self.report_ca.pem()
        if not pem:
            return self.config
        report = self.config.report.model_copy(update={"ca_bundle": pem})
        return self.config.model_copy(update={"report": report})


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
            started = time.perf_counter()
            try:
                return await answer(request, webhook=webhook, **kwargs)
            finally:
                stats.metrics.admission_duration.observe(time.perf_counter() - started)

        async def answer(request: Any, *, webhook: str | None = None, **kwargs: Any) -> Any:
            problem = malformed_review(request)
            if problem is not None:
                stats.count("error")
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
                stats.count("error")
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
            try:
                return await fn(request, webhook=HANDLER_ID, **kwargs)
            except Exception:
                stats.count("error")
                raise

        async for client_config in super().__call__(cast(kopf.WebhookFn, routed)):
            if self.on_client_config is not None:
                await self.on_client_config(client_config)
            yield client_config
