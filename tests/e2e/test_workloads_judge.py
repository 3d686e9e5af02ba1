"""How the e2e tests judge an app's calls: the classifier alone, without a node, so a
change to what counts as a fault is seen at once and not only after a flaky run."""

from __future__ import annotations

import ast

from tests.e2e.workloads import APP_SCRIPT, LATE, bad_calls


def _ok(t: float, left: float = 30.0) -> dict[str, object]:
    return {"t": t, "left": left, "sha": "a", "active": True}


def test_the_app_script_is_python() -> None:
    ast.parse(APP_SCRIPT)


def test_faults_are_a_missing_file_an_expired_token_and_a_rejected_live_token() -> None:
    missing = {"t": 1, "error": "FileNotFoundError"}
    expired = {"t": 2, "left": -0.1, "sha": "a", "active": False}
    rejected = {"t": 3, "left": LATE + 1, "sha": "a", "active": False}
    late = {"t": 4, "left": LATE / 2, "sha": "a", "active": False}
    calls = [missing, expired, rejected, late] + [_ok(t) for t in range(5, 40)]
    assert bad_calls(calls) == [missing, expired, rejected]


def test_an_unreached_idp_is_no_fault_unless_it_blinds_the_check() -> None:
    unreached = {"t": 0, "left": 9.1, "sha": "a", "unreachable": "URLError"}
    few = [unreached] + [_ok(t) for t in range(1, 20)]
    assert bad_calls(few) == []
    many = [dict(unreached, t=t) for t in range(5)] + [_ok(t) for t in range(5, 20)]
    assert len(bad_calls(many)) == 5
