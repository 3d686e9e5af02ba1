"""No credential ever leaves the process in a log line, /status, a report or an exception.

Every secret in these flows is a recognizable canary; the flows include IdPs that echo
the rejected credential back in `error_description`, which real ones do.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.support.fakes import CLIENT_SECRET, FakeIdP
from token_refresher import Refresher, Reporter, TokenEndpointError
from token_refresher.idp import IdP
from token_refresher.logs import configure

CANARY = "SECRET-CANARY"
UNREGISTERED_JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzb21lYm9keS1lbHNlIn0.c2lnbmF0dXJlLXNlY3JldA"


@pytest.fixture
def stderr_log() -> Iterator[io.StringIO]:
    """The JSON log stream the daemon would write to stderr, at DEBUG."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure("json", "debug", stream)
    yield stream
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def echo(status: int, error: str, leaked: str) -> httpx2.Response:
    return httpx2.Response(
        status,
        json={
            "error": error,
            "error_description": f"credential {leaked} and {UNREGISTERED_JWT}",
        },
    )


def assert_clean(*texts: str) -> None:
    for text in texts:
        assert CANARY not in text
        assert UNREGISTERED_JWT not in text


async def test_secrets_stay_out_of_logs_status_reports_and_errors(
    make_settings, idp: FakeIdP, clock, half, tmp_path: Path, caplog, stderr_log
) -> None:
    caplog.set_level(logging.DEBUG)
    bootstrap = tmp_path / "refresh-token"
    bootstrap.write_text(f"{CANARY}-refresh-bootstrap")
    report_token = tmp_path / "report-token"
    report_token.write_text(f"{CANARY}-report-token")
    settings = make_settings(
        grant="refresh_token",
        refresh_token_file=bootstrap,
        client_auth="client_secret_post",
        report_url="https://operator.example/report",
        report_token_file=report_token,
        format="json",
    )
    reports: list[bytes] = []

    def operator(request: httpx2.Request) -> httpx2.Response:
        reports.append(request.content)
        return httpx2.Response(202)

    reporter = Reporter(
        settings, transport=httpx2.MockTransport(operator), clock=clock, random=half
    )
    idp.reply(
        idp.token(refresh_token=f"{CANARY}-refresh-2"),
        echo(401, "invalid_client", CLIENT_SECRET),
        echo(400, "invalid_request", f"{CANARY}-refresh-2"),
        echo(400, "invalid_grant", f"{CANARY}-access-1"),
    )
    statuses = []
    async with Refresher(
        settings, transport=idp.transport, clock=clock, random=half, reporter=reporter
    ) as r:
        for _ in range(4):
            await r.refresh()
            statuses.append(json.dumps(r.status()))
            for report in list(reporter._pending.values()):
                await reporter._send(report)
        r._expire()
        statuses.append(json.dumps(r.status()))
        for report in list(reporter._pending.values()):
            await reporter._send(report)
    await reporter.aclose()

    assert len(idp.posts) == 4
    assert len(reports) >= 3
    assert_clean(
        caplog.text, stderr_log.getvalue(), *statuses, *(body.decode() for body in reports)
    )
    for record in caplog.records:
        assert_clean(record.getMessage(), json.dumps(vars(record), default=str))
    assert "[redacted]" in caplog.text  # the echoes were there, and were blanked


async def test_exceptions_do_not_carry_echoed_credentials(
    make_settings, clock, tmp_path: Path
) -> None:
    sa = tmp_path / "sa-token"
    sa.write_text(f"{CANARY}-subject-token")
    settings = make_settings(grant="token_exchange", service_account_token_file=sa)
    transport = httpx2.MockTransport(
        lambda request: echo(400, "invalid_grant", f"{CANARY}-subject-token")
    )
    async with Refresher(settings, transport=transport, clock=clock) as r:
        with pytest.raises(TokenEndpointError) as caught:
            await IdP(settings, r._client, clock).request_token(
                r._credentials.grant_params(r.settings.grant), None, token_exchange=True
            )
    exc = caught.value
    assert_clean(str(exc), repr(exc), str(exc.description), repr(exc.args))


def test_tokens_do_not_show_in_repr() -> None:
    from token_refresher import Token

    token = Token(
        access_token=f"{CANARY}-a",
        token_type="Bearer",
        lifetime=1,
        lifetime_source="default",
        received_mono=0,
        received_wall=0,
        refresh_token=f"{CANARY}-r",
    )
    assert_clean(repr(token), str(token))
