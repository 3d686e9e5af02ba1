"""The health port: `/healthz` for the kubelet's probes, `/metrics` for Prometheus.

kopf can serve a liveness endpoint itself, but only that one path on its port, and the
chart's ServiceMonitor scrapes `/metrics` on the same port. So the operator serves both
here, in plain HTTP (nothing secret in either). `/healthz` answers as kopf's endpoint
did, with the admission counters under `admission`; it answers while the operator's
event loop runs, which is what liveness means for it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from aiohttp import web

from token_refresher.boot import take

from .metrics import CONTENT_TYPE, OperatorMetrics

__all__ = ["make_health_app", "serve_health"]


def make_health_app(
    *, metrics: OperatorMetrics, status: Callable[[], dict[str, object]]
) -> web.Application:
    """GET /healthz (JSON from `status`) and GET /metrics (Prometheus text)."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response(status())

    async def scrape(request: web.Request) -> web.Response:
        # As a header: aiohttp's content_type= would drop the `version=0.0.4` parameter.
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", scrape)
    return app


async def serve_health(
    *,
    host: str,
    port: int,
    app: web.Application,
    stop: asyncio.Event,
    started: asyncio.Event | None = None,
    listening: socket.socket | None = None,
) -> None:
    """Serve `app` on host:port until `stop` is set; on `listening` instead, when the
    process bound that port before it loaded kopf (`cli.main`)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        early = take(listening, port)
        if early is not None:
            await web.SockSite(runner, early).start()
        else:
            await web.TCPSite(runner, host, port).start()
        if started is not None:
            started.set()
        await stop.wait()
    finally:
        await runner.cleanup()
