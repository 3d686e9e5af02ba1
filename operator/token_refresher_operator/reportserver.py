"""The HTTPS server of the `/report` endpoint: the pure checks of `report` wired to aiohttp.

`make_app` builds the aiohttp application with the Kubernetes calls passed in (the tests
pass fakes to inject faults); `serve_reports` is what the operator runs: TLS from files
reloaded when they change, a TokenReview client with its cache, the pod reader and the
Event recorder. See `report` for the order of the checks and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from .errors import OperatorError
from .events import Aggregator, EventRecorder, State, render_note
from .report import (
    MAX_BODY,
    Pod,
    RateLimiter,
    Report,
    ReportInvalid,
    ReportMetrics,
    check_pod,
    parse_report,
)
from .reviews import (
    Reject,
    ReviewUnavailable,
    TokenReviewer,
    TokenReviewStatus,
    check_identity,
)
from .tls import ReloadingTLS

__all__ = [
    "KubePods",
    "Pods",
    "PodsUnavailable",
    "Recorder",
    "ReportSettings",
    "Reviewer",
    "make_app",
    "serve_reports",
]

logger = logging.getLogger(__name__)


# --- the HTTP shell ----------------------------------------------------------------------


class Reviewer(Protocol):
    async def review(self, token: str) -> TokenReviewStatus: ...


class Pods(Protocol):
    async def get(self, namespace: str, name: str) -> Pod | None: ...


class Recorder(Protocol):
    def record(
        self,
        *,
        namespace: str,
        pod: str,
        uid: str,
        state: State,
        error: str | None,
        note: str,
        at: datetime,
        token: str | None = None,
    ) -> None: ...


class PodsUnavailable(OperatorError):
    """The pod could not be read (not: it does not exist): answer 503."""


_BEARER = re.compile(r"^Bearer +([!-~]+) *$")


def _bearer(header: str | None) -> str | None:
    match = _BEARER.match(header or "")
    return match[1] if match else None


def make_app(
    *,
    audience: str,
    reviewer: Reviewer,
    pods: Pods,
    recorder: Recorder,
    limiter: RateLimiter | None = None,
    metrics: ReportMetrics | None = None,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> web.Application:
    """The aiohttp application: POST /report, GET /healthz."""
    limiter = limiter if limiter is not None else RateLimiter()
    metrics = metrics if metrics is not None else ReportMetrics()

    def refuse(reject: Reject, report: Report | None = None) -> web.Response:
        metrics.reject(reject.reason)
        about = f" about pod {report.namespace}/{report.pod}" if report else ""
        level = logging.DEBUG if reject.status == 429 else logging.INFO
        logger.log(level, "report%s refused (%s): %s", about, reject.reason, reject.message)
        headers = {}
        if reject.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        elif reject.status in (429, 503):
            headers["Retry-After"] = "1"
        return web.json_response(
            {"error": reject.reason, "message": reject.message},
            status=reject.status,
            headers=headers,
        )

    async def report_handler(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return refuse(Reject(413, "too_large", f"the body is over {MAX_BODY} bytes"))
        token = _bearer(request.headers.get("Authorization"))
        if token is None:
            return refuse(Reject(401, "no_token", "a bearer token is required"))
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return refuse(Reject(413, "too_large", f"the body is over {MAX_BODY} bytes"))
        try:
            report = parse_report(body)
        except ReportInvalid as exc:
            return refuse(Reject(400, "bad_body", "not a report: " + "; ".join(exc.lines)))
        try:
            review = await reviewer.review(token)
        except ReviewUnavailable as exc:
            return refuse(Reject(503, "review_unavailable", "; ".join(exc.lines)), report)
        verdict = check_identity(review=review, report=report, audience=audience)
        if isinstance(verdict, Reject):
            return refuse(verdict, report)
        if not limiter.allow(f"{report.namespace}/{report.pod}", now=clock()):
            return refuse(Reject(429, "rate_limited", "too many reports from this pod"), report)
        try:
            pod = await pods.get(report.namespace, report.pod)
        except PodsUnavailable as exc:
            return refuse(Reject(503, "pod_unavailable", "; ".join(exc.lines)), report)
        verdict = check_pod(pod=pod, report=report, service_account=verdict.service_account)
        if isinstance(verdict, Reject):
            return refuse(verdict, report)
        recorder.record(
            namespace=report.namespace,
            pod=report.pod,
            uid=report.uid,
            state=report.state,
            error=report.error,
            note=render_note(
                state=report.state,
                error=report.error,
                description=report.description,
                consecutive_failures=report.consecutive_failures,
                since=report.since,
                token=report.token,
            ),
            at=now(),
            token=report.token,
        )
        metrics.accept(report.state)
        return web.json_response({"status": "accepted"}, status=202)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/report", report_handler)
    app.router.add_get("/healthz", healthz)
    return app


class KubePods:
    """Reads pods with the synchronous kubernetes client, in a thread."""

    def __init__(self, *, api_client: Any, timeout: float = 10.0) -> None:
        from kubernetes import client

        self._api: Any = client.CoreV1Api(api_client)
        self._timeout = timeout

    async def get(self, namespace: str, name: str) -> Pod | None:
        try:
            raw = await asyncio.to_thread(self._read, namespace, name)
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status == 404:
                return None
            detail = f" (HTTP {status})" if status else ""
            problem = f"reading the pod failed: {type(exc).__name__}{detail}"
            raise PodsUnavailable([problem]) from exc
        return raw if isinstance(raw, dict) else None  # type: ignore[return-value]

    def _read(self, namespace: str, name: str) -> Any:
        resp = self._api.read_namespaced_pod(
            name, namespace, _preload_content=False, _request_timeout=self._timeout
        )
        return json.loads(resp.data)


class ReportSettings(Protocol):
    """What serve_reports reads from the operator settings."""

    @property
    def listen_host(self) -> str: ...
    @property
    def report_port(self) -> int: ...
    @property
    def tls_cert_file(self) -> Path: ...
    @property
    def tls_key_file(self) -> Path: ...
    @property
    def report_audience(self) -> str: ...


def _default_api_client() -> Any:
    # In a pod: its service account; elsewhere (DEV): the kubeconfig. Not the library's
    # global default configuration, which other code in the process may change.
    from kubernetes import client
    from kubernetes import config as kube_config

    loader: Any = kube_config  # untyped functions
    configuration = client.Configuration()
    try:
        loader.load_incluster_config(client_configuration=configuration)
    except loader.ConfigException:
        return loader.new_client_from_config()
    return client.ApiClient(configuration)


async def serve_reports(
    *,
    settings: ReportSettings,
    stop: asyncio.Event,
    api_client: Any = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    metrics: ReportMetrics | None = None,
    limiter: RateLimiter | None = None,
    coalesce: float = 10.0,
    instance: str | None = None,
    started: asyncio.Event | None = None,
) -> None:
    """Serve /report over HTTPS on settings.listen_host:settings.report_port until `stop`.

    cert_file/key_file override the settings' TLS files (dev mode passes the webhook's
    self-signed pair). Events for one pod and reason are written at most once per
    `coalesce` seconds. `started` is set once the port is listening. On the way out:
    drains requests, writes pending Event counts, logs a one-line summary.
    """
    owned = api_client is None
    api_client = _default_api_client() if owned else api_client
    metrics = metrics if metrics is not None else ReportMetrics()
    recorder = EventRecorder(
        api_client=api_client,
        instance=instance or socket.gethostname(),
        aggregator=Aggregator(interval=coalesce),
        metrics=metrics.exported,
    )
    reviewer = TokenReviewer(
        api_client=api_client, audience=settings.report_audience, metrics=metrics.exported
    )
    app = make_app(
        audience=settings.report_audience,
        reviewer=reviewer,
        pods=KubePods(api_client=api_client),
        recorder=recorder,
        limiter=limiter,
        metrics=metrics,
    )
    tls = ReloadingTLS(
        Path(cert_file or settings.tls_cert_file),
        Path(key_file or settings.tls_key_file),
        name="report endpoint",
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    flusher: asyncio.Task[None] | None = None
    try:
        site = web.TCPSite(
            runner, settings.listen_host, settings.report_port, ssl_context=tls.context
        )
        await site.start()
        logger.info(
            "report endpoint listening on https://%s:%d/report",
            settings.listen_host,
            settings.report_port,
        )
        if started is not None:
            started.set()
        flusher = asyncio.create_task(recorder.run(stop))
        await stop.wait()
    finally:
        await runner.cleanup()
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        await recorder.aclose()
        if owned:
            api_client.close()
        logger.info(
            "report endpoint stopped: %s; events written %d, failed %d",
            metrics.summary(),
            recorder.written,
            recorder.failures,
        )
