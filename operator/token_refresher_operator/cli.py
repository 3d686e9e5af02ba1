"""`token-refresher-operator`: check the configuration, then run the operator.

Configuration is checked before anything talks to the cluster: a wrong setting prints one
line per problem (naming the env var, or the config file and key) and exits 2, without a
traceback. `--check` stops there, which is handy in a chart test or a CI job.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping, Sequence

from token_refresher.boot import listen_early

__all__ = ["main"]

_MISSING_EXTRA = (
    "token-refresher-operator: the operator's dependencies are not installed ({}); "
    "install them with: pip install 'token-refresher[operator]'"
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def _epilog() -> str:
    from token_refresher_operator.config import ENV_PREFIX, OperatorSettings

    lines = ["environment (prefix " + ENV_PREFIX + "):"]
    for name, field in OperatorSettings.model_fields.items():
        default = field.default
        lines.append(f"  {name.upper():<16} {field.description or ''} [default: {default}]")
    return "\n".join(lines)


def _health_socket(environ: Mapping[str, str]) -> socket.socket | None:
    """The health port, bound before kopf and the kubernetes client are imported (a few
    seconds on a busy node): the kubelet's first probe then waits in the queue for the
    health server instead of being refused, which would be a Warning on every start.
    The defaults are OperatorSettings'; the settings' own port wins if they differ."""
    host = environ.get("TOKEN_REFRESHER_OPERATOR_LISTEN_HOST", "0.0.0.0")
    port = environ.get("TOKEN_REFRESHER_OPERATOR_HEALTH_PORT", "8080")
    return listen_early(f"{host}:{port}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    health = None if argv else _health_socket(os.environ)  # only a running operator
    try:
        return _main(argv, health)
    finally:
        if health is not None:
            health.close()  # a configuration error, or the health server is done with it


def _main(argv: Sequence[str], health: socket.socket | None) -> int:
    # Imported here, after the health port is bound (`main`), as is everything else.
    import argparse
    import asyncio

    # The sidecar image ships this script too, without the operator extra: say what to
    # install instead of a traceback.
    try:
        import kopf  # noqa: F401
        import kubernetes  # noqa: F401

        from token_refresher_operator.config import load_cluster_config, load_settings
        from token_refresher_operator.errors import ConfigError
    except ImportError as exc:
        print(_MISSING_EXTRA.format(exc.name or exc), file=sys.stderr)
        return EXIT_CONFIG
    parser = argparse.ArgumentParser(
        prog="token-refresher-operator",
        description="Injects the token-refresher sidecar into annotated pods (admission "
        "webhook /mutate), turns sidecar failure reports into pod Events (/report), and "
        "warns about annotated pods that run without the sidecar.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the configuration and exit (0 if usable, 2 if not)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        config = load_cluster_config(settings.config_file)
    except ConfigError as exc:
        for line in exc.lines:
            print(f"token-refresher-operator: {line}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        print(f"token-refresher-operator: configuration OK ({settings.config_file})")
        return EXIT_OK

    # Imported only now: kopf and the kubernetes client are slow to import, and a
    # configuration check needs neither.
    from token_refresher_operator.app import run

    try:
        asyncio.run(run(settings=settings, config=config, health_socket=health))
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:
        print(f"token-refresher-operator: stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
