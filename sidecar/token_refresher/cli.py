"""The `token-refresher` console script: the sidecar daemon, or one fetch with `--once`.

Order matters here: settings and files are checked before anything touches the network,
and a user's mistake ends as one line per problem and exit code 2, never a traceback.
The daemon is arq-style: signal handlers on the loop, stop within a second of SIGTERM,
one summary line per token on the way out. Every token of the sidecar (the default one
and those of TOKEN_REFRESHER_TOKENS) is served by one process (`Refreshers`).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

from .credentials import check_files
from .logs import configure, get_logger
from .refresher import Refresher
from .refreshers import Refreshers
from .server import StatusServer, parse_listen
from .settings import Settings, config_errors, env_name

if TYPE_CHECKING:
    import argparse

__all__ = ["main", "serve"]

log = get_logger(__name__)

EXIT_OK, EXIT_NO_TOKEN, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    import argparse
    import textwrap

    lines = ["settings (environment variables; see 'Configuring the sidecar' in the README):"]
    for env, default, description in Settings.describe():
        lines.append(f"  {env}  (default: {default})")
        lines.extend(
            textwrap.wrap(description, 76, initial_indent="      ", subsequent_indent="      ")
        )
    lines += [
        "",
        "exit codes: 0 stopped by SIGTERM/SIGINT (or --once wrote every token),",
        "            1 --once got no token for one of them, 2 bad configuration",
    ]
    parser = argparse.ArgumentParser(
        prog="token-refresher",
        description="Keeps an OAuth2/OIDC access token fresh in a file: fetches it,\n"
        "refreshes it ahead of expiry, writes it atomically. Serves /healthz,\n"
        "/readyz, /status and /metrics on LISTEN.",
        epilog="\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="fetch every token once, write them and exit (0 all written, 1 one or more "
        "not, 2 bad configuration)",
    )
    return parser


def load_settings() -> Settings | list[str]:
    """Settings from the environment, or the lines that say what is wrong with them."""
    try:
        settings = Settings.from_env()
    except ValidationError as exc:
        return config_errors(exc)
    problems = [
        line
        for name, token in settings.all_tokens().items()
        for line in check_files(token, token=name)
    ]
    return problems or settings


def main(argv: Sequence[str] | None = None, *, listening: socket.socket | None = None) -> int:
    """The console script (entered through `boot`, which may pass the daemon's socket)."""
    argv = sys.argv[1:] if argv is None else argv
    # Every pod starts the daemon without arguments: argparse (and the gettext it pulls
    # in) would stay resident for a parser that is never used, so only --once and --help
    # (and mistakes) build one.
    run_once = bool(argv) and bool(_parser().parse_args(argv).once)
    loaded = load_settings()
    if isinstance(loaded, list):
        for line in loaded:
            print(line, file=sys.stderr)
        return EXIT_CONFIG
    configure(loaded.log_format, loaded.log_level)
    if run_once:
        return asyncio.run(once(loaded))
    return asyncio.run(serve(loaded, listening=listening))


async def once(settings: Settings) -> int:
    """Fetch and write every token once, side by side: 0 if all were written, 1 if not."""
    async with Refreshers(settings) as refreshers:
        written = await refreshers.once()
    if len(written) > 1:
        missing = [name for name, ok in written.items() if not ok]
        log.info(
            f"wrote {sum(written.values())} of {len(written)} tokens"
            + (f"; no token for {', '.join(missing)}" if missing else "")
        )
    return EXIT_OK if all(written.values()) else EXIT_NO_TOKEN


async def serve(
    settings: Settings,
    *,
    refresher: Refresher | Refreshers | None = None,
    listening: socket.socket | None = None,
) -> int:
    """Run the daemon until SIGTERM/SIGINT (or `refresher.stop()`); returns the exit code.

    `listening`: LISTEN's socket, bound before the settings were read (`boot`)."""
    loop = asyncio.get_running_loop()
    if refresher is None:
        reporter = None
        if settings.report_url is not None:
            from .report import Reporter  # only then: a sidecar without it never loads it

            reporter = Reporter(settings)
        refresher = Refreshers(settings, reporter=reporter)
    elif isinstance(refresher, Refresher):
        refresher = Refreshers.of({refresher.name: refresher})
    reporter = refresher.reporter
    host, port = parse_listen(settings.listen)
    server = StatusServer(refresher, host, port, listening=listening)
    try:
        await server.start()
    except OSError as exc:
        print(
            f"{env_name('listen')}: cannot listen on {settings.listen}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        await refresher.aclose()
        if reporter is not None:
            await reporter.aclose()
        return EXIT_CONFIG
    signals: list[signal.Signals] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, refresher.stop)
            signals.append(signum)
        except (NotImplementedError, RuntimeError):
            # Not the main thread (serve() embedded in a test or another program):
            # the caller stops us with refresher.stop().
            break
    report_task = asyncio.create_task(reporter.run()) if reporter is not None else None
    for name, each in refresher.refreshers.items():
        token = each.settings
        log.info(
            "token-refresher started",
            extra={
                "token": name,
                "grant": token.grant.value,
                "output": str(token.output),
                "format": token.format,
                "listen": f"{host}:{server.port}",
                "reporting": reporter is not None,
            },
        )
    try:
        await refresher.run()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        if report_task is not None:
            report_task.cancel()
            await asyncio.gather(report_task, return_exceptions=True)
        await server.aclose()
        await refresher.aclose()
        if reporter is not None:
            await reporter.aclose()
    for name, summary in refresher.summaries().items():
        log.info(summary, extra={"token": name})
    return EXIT_OK
