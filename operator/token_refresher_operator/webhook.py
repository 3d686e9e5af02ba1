"""The `/mutate` admission webhook: a bare aiohttp handler over the pure `patch.admit`.

Two pieces. `Injector.review` answers one AdmissionReview: it asks `admit`, once, whether
to leave the pod alone or for the operations, and returns them as the response's JSON
Patch, or denies the pod (HTTP 400 in the admission status) with the annotation
problems, so a pod is either fully injected or not created. `serve_webhook` serves it
over HTTPS at the contract's path `/mutate`, with the certificate files followed as they
are renewed (`tls.ReloadingTLS`); every call is counted, timed and logged, which is how
the tests prove that the apiserver never calls us for pods that did not opt in. A body
that is not an AdmissionReview the apiserver could have sent (`malformed_review`) is
answered 400 with the reason.

Why not kopf's admission machinery, which served this before: kopf copies the pod, runs
the handler over a `Patch` object, applies the operations to the copy and diffs it with
the original to build the JSON Patch it returns, with progress bookkeeping around it: 4 to
5 ms of CPU per pod on top of the patch itself, which is built once here and sent as it
is. kopf still runs the watch behind `SidecarNotInjected` (safetynet.py); see app.py.

A pod that already has the sidecar is answered first, before anything is parsed: it is
the apiserver's second call for the same pod when the configuration asks to be
reinvoked, or a pod created from an injected pod's manifest. A denied pod is its
author's mistake, not the operator's: one warning naming the pod and the annotation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from token_refresher_operator.admissionreview import answer, malformed_review, patch_answer
from token_refresher_operator.config import ClusterConfig, OperatorSettings
from token_refresher_operator.errors import AnnotationError
from token_refresher_operator.manifests import Pod
from token_refresher_operator.metrics import AdmissionResult, OperatorMetrics
from token_refresher_operator.patch import SIDECAR_NAME as SIDECAR
from token_refresher_operator.patch import admit, has_sidecar
from token_refresher_operator.reportca import ReportCA
from token_refresher_operator.tls import ReloadingTLS

__all__ = [
    "URL_PATH",
    "AdmissionStats",
    "Injector",
    "make_webhook_app",
    "malformed_review",
    "serve_webhook",
]

logger = logging.getLogger(__name__)

URL_PATH = "/mutate"


@dataclass
class AdmissionStats:
    """Counters of admission calls, shown on /healthz under `admission`."""

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


@dataclass
class Injector:
    """What the webhook needs to answer a review; `review` is the whole admission decision."""

    settings: OperatorSettings
    config: ClusterConfig
    stats: AdmissionStats = field(default_factory=AdmissionStats)
    # Where sidecars find the CA of /report when the config gives none (cert-manager).
    report_ca: ReportCA | None = None

    def review(self, review: dict[str, Any]) -> dict[str, Any]:
        """The AdmissionReview answering `review` (one `malformed_review` let through).

        No I/O but the log lines and the counters: the pod is admitted unchanged, admitted
        with the JSON Patch that injects the sidecar, or denied with the reasons.
        """
        stats = self.stats
        stats.requests += 1
        request = review["request"]
        pod = cast(Pod, request["object"])
        meta = pod.get("metadata") or {}
        namespace = request.get("namespace") or meta.get("namespace", "")
        name = request.get("name") or meta.get("name") or f"{meta.get('generateName', '')}*"
        dry = " (dry run)" if request.get("dryRun") else ""
        logger.info(
            "admission request %d: %s %s %s/%s%s",
            stats.requests,
            request.get("operation", "?"),
            (request.get("resource") or {}).get("resource", "?"),
            namespace,
            name,
            dry,
        )
        # First, and for nothing: the apiserver's reinvocation, once the sidecar is in.
        if has_sidecar(pod):
            stats.count("skipped")
            logger.info("pod %s/%s: already has the %s sidecar%s", namespace, name, SIDECAR, dry)
            return answer(review, {"allowed": True})
        try:
            # Once per admission: the reasons to leave the pod alone, then the patch.
            verdict = admit(
                pod=pod,
                namespace=namespace,
                config=self._config(),
                operator_namespace=self.settings.namespace,
                report_audience=self.settings.report_audience,
            )
        except AnnotationError as exc:
            stats.count("denied")
            # The pod's author made a mistake (or, for the lines saying so, the operator's
            # configuration is wrong): one line, with the pod and the annotation.
            level = logging.ERROR if exc.operator_fault else logging.WARNING
            logger.log(level, "pod %s/%s denied%s: %s", namespace, name, dry, exc.message)
            status = {"code": 400, "message": exc.message}
            return answer(review, {"allowed": False, "status": status})
        except Exception as exc:
            stats.count("error")
            logger.exception("pod %s/%s: building the patch failed%s", namespace, name, dry)
            message = f"token-refresher could not build the patch: {type(exc).__name__}: {exc}"
            status = {"code": 500, "message": message}
            return answer(review, {"allowed": False, "status": status})
        if isinstance(verdict, str):
            stats.count("skipped")
            logger.info("pod %s/%s: no injection: %s%s", namespace, name, verdict, dry)
            return answer(review, {"allowed": True})
        ops = verdict
        stats.count("injected")
        logger.info(
            "pod %s/%s: injecting the sidecar (%d operations)%s", namespace, name, len(ops), dry
        )
        return answer(review, patch_answer(ops))

    def _config(self) -> ClusterConfig:
        if self.report_ca is None or self.config.report is None:
            return self.config
        pem = self.report_ca.pem()
        if not pem:
            return self.config
        report = self.config.report.model_copy(update={"ca_bundle": pem})
        return self.config.model_copy(update={"report": report})


def _json(document: dict[str, Any]) -> web.Response:
    return web.Response(
        body=json.dumps(document, separators=(",", ":")).encode(),
        content_type="application/json",
    )


def make_webhook_app(*, injector: Injector) -> web.Application:
    """The aiohttp application: POST /mutate; any other POST is denied, saying where to go."""
    stats = injector.stats

    async def mutate(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            try:
                review = json.loads(await request.read())
            except web.HTTPRequestEntityTooLarge:
                stats.count("error")
                raise
            except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
                review = None
                problem: str | None = f"the body is not JSON ({exc})"
            else:
                problem = malformed_review(review)
            if problem is not None:
                stats.count("error")
                logger.warning("refused a malformed admission review: %s", problem)
                raise web.HTTPBadRequest(text=f"not an AdmissionReview: {problem}")
            return _json(injector.review(review))
        finally:
            stats.metrics.admission_duration.observe(time.perf_counter() - started)

    async def elsewhere(request: web.Request) -> web.Response:
        # A configuration pointing at another path would otherwise get aiohttp's bare 404,
        # which the apiserver reports as a failed call; deny saying what is wrong instead.
        stats.count("error")
        try:
            review = json.loads(await request.read())
        except ValueError:
            review = None
        if malformed_review(review) is not None:
            raise web.HTTPNotFound(text=f"token-refresher serves {URL_PATH}")
        message = f"token-refresher serves {URL_PATH}, not {request.path}"
        return _json(
            answer(review, {"allowed": False, "status": {"code": 404, "message": message}})
        )

    app = web.Application()
    app.router.add_post(URL_PATH, mutate)
    app.router.add_post("/{path:.*}", elsewhere)
    return app


async def serve_webhook(
    *,
    injector: Injector,
    host: str,
    port: int,
    cert_file: Path,
    key_file: Path,
    stop: asyncio.Event,
    started: asyncio.Event | None = None,
    on_listening: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve `/mutate` over HTTPS on host:port until `stop` is set.

    The certificate files are looked at again at most once a second, on a handshake, and
    a renewed pair is served from then on. `on_listening` runs once the port listens and
    before `started` is set: DEV mode registers the webhook configuration there.
    """
    tls = ReloadingTLS(cert_file, key_file, name="webhook")
    runner = web.AppRunner(
        make_webhook_app(injector=injector), access_log=None, handle_signals=False
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=tls.context).start()
        logger.info("admission webhook listening on https://%s:%d%s", host, port, URL_PATH)
        if on_listening is not None:
            await on_listening()
        if started is not None:
            started.set()
        await stop.wait()
    finally:
        await runner.cleanup()
