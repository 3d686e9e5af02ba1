"""The operator assembled: the webhook server, the report endpoint, kopf's watch.

`run` is what the console script calls once configuration has been checked. Three aiohttp
servers: the admission webhook (`webhook.serve_webhook`, /mutate), the report endpoint
(`reportserver.serve_reports`) and the health port (`healthserver`: /healthz, /metrics);
and kopf, for the watch behind `SidecarNotInjected` (`safetynet`) and the login. kopf runs
standalone (no peering: every replica serves the webhook and watches pods, and nothing
here needs a leader) and cluster-wide. When any of them stops, the others are stopped too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import kopf

from token_refresher_operator.config import ClusterConfig, OperatorSettings, ReportConfig
from token_refresher_operator.devcert import write_self_signed
from token_refresher_operator.healthserver import make_health_app, serve_health
from token_refresher_operator.kopfsetup import (
    build_registry,
    freeze_startup_heap,
    kopf_settings,
    operator_identity,
)
from token_refresher_operator.kubeapi import kube_api_client
from token_refresher_operator.metrics import OperatorMetrics
from token_refresher_operator.registration import (
    DEV_CONFIGURATION_NAME,
    apply_configuration,
    delete_configuration,
    webhook_configuration,
)
from token_refresher_operator.report import ReportMetrics
from token_refresher_operator.reportca import ReportCA
from token_refresher_operator.reportserver import serve_reports
from token_refresher_operator.safetynet import SidecarWatch
from token_refresher_operator.webhook import URL_PATH, AdmissionStats, Injector, serve_webhook

__all__ = ["run"]

logger = logging.getLogger(__name__)


def _stop_on_signals_until_kopf_runs(*stops: asyncio.Event) -> None:
    """SIGTERM and SIGINT stop the operator gracefully from now on, not only once kopf runs.

    kopf installs its handlers when it starts, after the servers: the health port answers
    before that, and a SIGTERM in between (a scale-down or a rollout just after the pod
    came up) took the default action and killed the process mid-start. These handlers
    raise the stop flags instead, and kopf, started with its flag already raised, stops at
    once; kopf's own handlers replace them when it starts. Signals can be handled only in
    the main thread (tests run the operator in others).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()

    def stop() -> None:
        logger.info("stopping: a signal came before kopf started")
        for flag in stops:
            flag.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


def _configure_logging(level: str) -> None:
    kopf.configure(verbose=level == "debug", quiet=level in ("warning", "error"))
    logging.getLogger().setLevel(level.upper())


async def _start(
    serve: Callable[[asyncio.Event], Coroutine[Any, Any, None]], *, name: str
) -> asyncio.Task[None]:
    """Start a server task; return once it listens (or raise why it cannot)."""
    started = asyncio.Event()
    task = asyncio.create_task(serve(started), name=name)
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # raises what stopped it (a port in use, unreadable certificates)
    return task


async def run(
    *,
    settings: OperatorSettings,
    config: ClusterConfig,
    health_socket: socket.socket | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, or until the webhook or the report endpoint fails.

    `health_socket`: the health port, bound and listening since the process started."""
    _configure_logging(settings.log_level)
    api_client = kube_api_client()
    with contextlib.ExitStack() as cleanup:
        listen_host = settings.listen_host
        register: Callable[[], Coroutine[Any, Any, None]] | None = None
        if settings.dev:
            # Local development: the apiserver reaches us on loopback only.
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="tr-dev-")))
            cert = write_self_signed(workdir)
            tls = (cert.cert_file, cert.key_file)
            host = "127.0.0.1"
            url = f"https://{host}:{settings.webhook_port}{URL_PATH}"
            # Dev sidecars report to this very process, trusting the same certificate.
            report = config.report or ReportConfig.model_validate(
                {"url": f"https://{host}:{settings.report_port}/report"}
            )
            if not report.ca_bundle.strip():
                report = report.model_copy(update={"ca_bundle": cert.pem})
            config = config.model_copy(update={"report": report})
            listen_host = host

            async def register_dev() -> None:
                body = webhook_configuration(
                    name=DEV_CONFIGURATION_NAME,
                    url=url,
                    ca_bundle=cert.pem.encode("ascii"),
                    operator_namespace=settings.namespace,
                )
                # The apiserver may still be starting next to us (`make demo`): retry a
                # little before giving up, which stops the operator with the cause.
                for delay in (1.0, 2.0, 4.0, 8.0, 15.0, None):
                    try:
                        await apply_configuration(api_client=api_client, body=body)
                        return
                    except Exception as exc:
                        if delay is None:
                            raise
                        logger.warning(
                            "cannot register the webhook configuration yet (%s); retrying",
                            type(exc).__name__,
                        )
                        await asyncio.sleep(delay)

            register = register_dev
        else:
            tls = (settings.tls_cert_file, settings.tls_key_file)

        report_ca = None
        if not settings.dev and config.report is not None and not config.report.ca_bundle.strip():
            # cert-manager mode: the chart cannot know the CA; cert-manager puts it beside
            # the serving certificate (reportca.py).
            report_ca = ReportCA.beside(settings.tls_cert_file)
            if report_ca.pem():
                logger.info("sidecars will trust the report CA in %s", report_ca.path)
        metrics = OperatorMetrics()
        injector = Injector(
            settings=settings,
            config=config,
            stats=AdmissionStats(metrics=metrics),
            report_ca=report_ca,
        )
        watch = SidecarWatch(
            operator_namespace=settings.namespace,
            excluded_namespaces=frozenset(config.excluded_namespaces),
            metrics=metrics,
        )
        registry = build_registry(watch=watch)
        if settings.dev:

            async def unregister(**_: Any) -> None:
                # Best effort: a stopping operator must not hang on an unreachable cluster
                # (kopf would retry a failed cleanup every minute).
                try:
                    await delete_configuration(api_client=api_client, name=DEV_CONFIGURATION_NAME)
                except Exception as exc:
                    logger.warning(
                        "could not delete MutatingWebhookConfiguration %s: %s: %s",
                        DEV_CONFIGURATION_NAME,
                        type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "",
                    )

            kopf.on.cleanup(registry=registry, id="dev-webhook-configuration")(unregister)

        stop_reports = asyncio.Event()
        stop_kopf = asyncio.Event()
        _stop_on_signals_until_kopf_runs(stop_reports, stop_kopf)
        # Before anything listens: the collection it starts with pauses the process once,
        # and no admission review or probe should wait for it.
        freeze_startup_heap()
        # Started (and listening) before kopf: kopf treats tasks that appear while it runs
        # as its own and cancels them at exit after 5 s, which would cut the report
        # endpoint's drain short. The webhook comes first among the HTTPS servers, so DEV
        # mode registers the configuration only once something answers at its URL.
        health = await _start(
            lambda started: serve_health(
                host=settings.listen_host,
                port=settings.health_port,
                app=make_health_app(
                    metrics=metrics, status=lambda: {"admission": injector.stats.as_dict()}
                ),
                stop=stop_reports,
                started=started,
                listening=health_socket,
            ),
            name="health port",
        )
        servers = [health]
        try:
            servers.append(
                await _start(
                    lambda started: serve_webhook(
                        injector=injector,
                        host=listen_host,
                        port=settings.webhook_port,
                        cert_file=Path(tls[0]),
                        key_file=Path(tls[1]),
                        stop=stop_reports,
                        started=started,
                        on_listening=register,
                    ),
                    name="admission webhook",
                )
            )
            reports = await _start(
                lambda started: serve_reports(
                    settings=settings,
                    stop=stop_reports,
                    api_client=api_client,
                    cert_file=tls[0],
                    key_file=tls[1],
                    metrics=ReportMetrics(exported=metrics),
                    started=started,
                ),
                name="report endpoint",
            )
        except BaseException:
            stop_reports.set()
            for task in servers:
                with contextlib.suppress(Exception):
                    await task
            raise
        servers.append(reports)
        for task in servers:
            task.add_done_callback(lambda _: stop_kopf.set())

        async def stopping(**_: Any) -> None:
            # kopf is stopping (a signal, most likely): let the webhook and the report
            # endpoint drain meanwhile, and raise kopf's own stop flag, whose waiter task kopf would
            # otherwise leave pending and then wait 5 s for as a "hung" task.
            stop_reports.set()
            stop_kopf.set()

        kopf.on.cleanup(registry=registry, id="stop-report-endpoint")(stopping)
        # kopf's Identity is a NewType of str that kopf does not export.
        identity: Any = operator_identity()
        try:
            await kopf.operator(
                registry=registry,
                settings=kopf_settings(settings),
                identity=identity,
                standalone=True,
                clusterwide=True,
                stop_flag=stop_kopf,
            )
        finally:
            stop_reports.set()
            for task in reversed(servers):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            api_client.close()
        logger.info(
            "operator stopped: %s; SidecarNotInjected events posted: %d",
            ", ".join(f"{k} {v}" for k, v in injector.stats.as_dict().items()),
            watch.posted,
        )
