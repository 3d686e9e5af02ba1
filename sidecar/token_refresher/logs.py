"""Log lines: JSON (or plain text) on stderr, scrubbed of credentials.

One JSON object per line with `ts`, `level`, `msg` and any `extra=` fields, because
that is what log pipelines index. Loggers obtained through `get_logger` carry a filter
that scrubs each record where it is created — before any handler, pytest's `caplog`
included, sees it — and the formatters scrub again the final line, exceptions and
third-party records included. httpx2 logs every request at INFO and authlib can log
bodies at DEBUG; both are held at WARNING. Every line about a token carries its name
in a `token` field: a `Refresher` sets `current_token` around its work, and the filter
copies it into each record, whichever module logs it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

from .redact import redactor

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "configure",
    "current_token",
    "get_logger",
]

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_NOISY = ("httpx2", "httpx", "httpcore", "authlib", "asyncio")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redactor.scrub(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


# The token whose work is running: a context variable, so each refresher's task (and
# whatever it calls: the grant, the family, the writer) names its own token.
_TOKEN: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "token_refresher_log_token", default=None
)


@contextmanager
def current_token(name: str) -> Iterator[None]:
    """Within this block (and the tasks it starts), log lines carry `token=name`."""
    reset = _TOKEN.set(name)
    try:
        yield
    finally:
        _TOKEN.reset(reset)


class RedactingFilter(logging.Filter):
    """Replaces registered secrets and JWT-shaped strings in a record, in place, and
    adds the current token's name."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redactor.scrub(record.getMessage())
        record.args = None
        token = _TOKEN.get()
        if token is not None and not hasattr(record, "token"):
            record.token = token
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, _scrub(value))
        return True


_FILTER = RedactingFilter()


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: _scrub(v) for k, v in vars(record).items() if k not in _STANDARD}


def _ts(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _ts(record),
            "level": record.levelname.lower(),
            "msg": redactor.scrub(record.getMessage()),
        }
        if record.name and not record.name.startswith("token_refresher"):
            line["logger"] = record.name
        line.update(_fields(record))
        if record.exc_info:
            line["exc"] = redactor.scrub(self.formatException(record.exc_info))
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{_ts(record)} {record.levelname.lower():7} {record.getMessage()}"
        if fields:
            line += "  " + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redactor.scrub(line)


def configure(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Send every log record to `stream` (stderr) in `fmt`, at `level` and above."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
