"""Log lines: one JSON object per line (or text), fields included, credentials blanked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from token_refresher.logs import configure, get_logger
from token_refresher.redact import redactor


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    yield stream, get_logger("token_refresher.test")
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def test_json_lines_have_ts_level_msg_and_fields(capture) -> None:
    stream, log = capture
    configure("json", "info", stream)
    log.info("token refreshed", extra={"expires_at": "2027-01-15T09:00:00Z", "lifetime": 3600})
    log.debug("not shown at info")
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "info"
    assert record["msg"] == "token refreshed"
    assert record["ts"].endswith("+00:00")
    assert (record["expires_at"], record["lifetime"]) == ("2027-01-15T09:00:00Z", 3600)


def test_text_lines_are_readable(capture) -> None:
    stream, log = capture
    configure("text", "debug", stream)
    log.warning("retrying", extra={"error": "http_503"})
    assert stream.getvalue().rstrip().endswith("warning retrying  error=http_503")


def test_registered_secrets_and_jwts_are_blanked_everywhere(capture) -> None:
    stream, log = capture
    configure("json", "debug", stream)
    redactor.add("SECRET-CANARY-x1")
    jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.sig"
    try:
        raise ValueError(f"body was SECRET-CANARY-x1 and {jwt}")
    except ValueError:
        log.exception("failed with %s", "SECRET-CANARY-x1", extra={"detail": jwt})
    logging.getLogger("some.library").warning("echo SECRET-CANARY-x1")
    text = stream.getvalue()
    assert "SECRET-CANARY" not in text
    assert jwt not in text
    assert text.count("[redacted]") >= 4


def test_http_client_loggers_are_held_at_warning(capture) -> None:
    stream, _ = capture
    configure("json", "debug", stream)
    logging.getLogger("httpx2").info("HTTP Request: POST https://idp/token")
    assert stream.getvalue() == ""
