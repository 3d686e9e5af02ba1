"""The HTTPS server of the `/report` endpoint: the pure checks wired to aiohttp and the API.

`make_app` is the request handler: the gate of `report` and `checks`, in order, answered
as JSON. `ReportServer` is the I/O shell around it, started and closed like the sidecar's
`StatusServer`: TLS from files reloaded when they change (`tls`), a TokenReview client
with its cache (`reviews`), the Event recorder (`recorder`), all over one `kubeapi.KubeApi`.
`serve_reports` runs one until a stop event, as the operator and the benchmark do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .checks import Reject, check_identity, check_pod
from .events import render_note
from .kubeapi import KubeApi, KubeApiError, kube_api_client
from .recorder import EventRecorder
from .report import MAX_BODY, RateLimiter, Report, ReportInvalid, ReportMetrics, parse_report
from .reviews import TokenReviewer
from .series import Aggregator
from .tls import ReloadingTLS

if TYPE_CHECKING:
    from .config import OperatorSettings

__all__ = ["ReportServer", "make_app", "serve_reports"]

logger = logging.getLogger(__name__)


_BEARER = re.compile(r"^Bearer +([!-~]+) *$")


def _bearer(header: str | None) -> str | None:
    match = _BEARER.match(header or "")
    return match[1] if match else None


def make_app(
    *,
    audience: str,
    reviewer: TokenReviewer,
    kube: KubeApi,
    recorder: EventRecorder,
    limiter: RateLimiter | None = None,
    metrics: ReportMetrics | None = None,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> web.Application:
    """The aiohttp application: POST /report, GET /healthz.

    The checks in the order of `report`'s docstring; `kube` reads the pod. Tests pass
    fakes for `reviewer`, `kube` and `recorder` to inject faults.
    """
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
        except KubeApiError as exc:
            return refuse(Reject(503, "review_unavailable", "; ".join(exc.lines)), report)
        verdict = check_identity(review=review, report=report, audience=audience)
        if isinstance(verdict, Reject):
            return refuse(verdict, report)
        if not limiter.allow(f"{report.namespace}/{report.pod}", now=clock()):
            return refuse(Reject(429, "rate_limited", "too many reports from this pod"), report)
        try:
            pod = await kube.read_pod(report.namespace, report.pod)
        except KubeApiError as exc:
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


class ReportServer:
    """Serves /report over HTTPS on `host`:`port` between `start()` and `aclose()`.

    `api_client`: the kubernetes ApiClient to use; None makes one (`kube_api_client`) and
    closes it on the way out. Events for one pod, token and reason are written at most
    once per `coalesce` seconds.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        cert_file: Path,
        key_file: Path,
        audience: str,
        api_client: Any = None,
        metrics: ReportMetrics | None = None,
        limiter: RateLimiter | None = None,
        coalesce: float = 10.0,
        instance: str | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._tls = ReloadingTLS(cert_file, key_file, name="report endpoint")
        self._owns_client = api_client is None
        self._api_client = kube_api_client() if api_client is None else api_client
        self.metrics = metrics if metrics is not None else ReportMetrics()
        kube = KubeApi(self._api_client)
        self.recorder = EventRecorder(
            api=kube,
            instance=instance or socket.gethostname(),
            aggregator=Aggregator(interval=coalesce),
            metrics=self.metrics.exported,
        )
        app = make_app(
            audience=audience,
            reviewer=TokenReviewer(api=kube, audience=audience, metrics=self.metrics.exported),
            kube=kube,
            recorder=self.recorder,
            limiter=limiter,
            metrics=self.metrics,
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._stop = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        """Listen; raises what keeps it from listening (a port in use, bad certificates)."""
        await self._runner.setup()
        try:
            site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._tls.context)
            await site.start()
        except BaseException:
            await self.aclose()
            raise
        logger.info("report endpoint listening on https://%s:%d/report", self._host, self._port)
        self._flusher = asyncio.create_task(self.recorder.run(self._stop))

    async def aclose(self) -> None:
        """Drain requests, write the pending Event counts, log a one-line summary."""
        await self._runner.cleanup()
        self._stop.set()
        if self._flusher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.recorder.aclose()
        if self._owns_client:
            self._api_client.close()
        logger.info(
            "report endpoint stopped: %s; events written %d, failed %d",
            self.metrics.summary(),
            self.recorder.written,
            self.recorder.failures,
        )

    async def __aenter__(self) -> ReportServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def serve_reports(
    *,
    settings: OperatorSettings,
    stop: asyncio.Event,
    api_client: Any = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    metrics: ReportMetrics | None = None,
    limiter: RateLimiter | None = None,
    started: asyncio.Event | None = None,
) -> None:
    """A `ReportServer` on the settings' host, port and TLS files until `stop` is set.

    cert_file/key_file override the settings' TLS files (dev mode passes the webhook's
    self-signed pair). `started` is set once the port is listening.
    """
    server = ReportServer(
        host=settings.listen_host,
        port=settings.report_port,
        cert_file=Path(cert_file or settings.tls_cert_file),
        key_file=Path(key_file or settings.tls_key_file),
        audience=settings.report_audience,
        api_client=api_client,
        metrics=metrics,
        limiter=limiter,
    )
    async with server:
        if started is not None:
            started.set()
        await stop.wait()
