"""Contract tests: the seams between the sidecar and the operator cannot drift apart.

Each side is tested alone elsewhere; here what one side *produces* is fed to the other
side's real parser, so a field renamed or typed differently on one side fails here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from token_refresher.report import Report, Reporter
from token_refresher.settings import Settings
from token_refresher_operator.report import parse_report


@pytest.fixture
def reporter(tmp_path: Path) -> Reporter:
    token = tmp_path / "report-token"
    token.write_text("not-a-real-token")
    settings = Settings.from_env(
        {
            "TOKEN_REFRESHER_TOKEN_URL": "https://idp.example/token",
            "TOKEN_REFRESHER_CLIENT_ID": "billing",
            "TOKEN_REFRESHER_CLIENT_AUTH": "none",
            "TOKEN_REFRESHER_REPORT_URL": "https://operator.example/report",
            "TOKEN_REFRESHER_REPORT_TOKEN_FILE": str(token),
            "TOKEN_REFRESHER_POD_NAMESPACE": "billing",
            "TOKEN_REFRESHER_POD_NAME": "api-7f9c",
            "TOKEN_REFRESHER_POD_UID": "0b6e1a52-3c0f-4c52-9f55-4b0d0f1e2a3b",
        }
    )
    return Reporter(settings)


@pytest.mark.parametrize(
    "report",
    [
        Report("failing", "invalid_client", "Client authentication failed", 3, time.time()),
        Report("failing", "connect_error", None, 1, time.time()),
        Report("expired", "http_503", "Service Unavailable", 9, time.time()),
        Report("recovered", None, None, 0, time.time()),
    ],
    ids=["failing", "failing-without-description", "expired", "recovered"],
)
async def test_every_report_the_sidecar_sends_is_one_the_operator_accepts(
    reporter: Reporter, report: Report
) -> None:
    try:
        body = json.dumps(reporter.body(report)).encode()
        parsed = parse_report(body)
    finally:
        await reporter.aclose()
    assert parsed.state == report.state
    assert parsed.pod == "api-7f9c"
    assert parsed.consecutive_failures == report.consecutive_failures
