"""Where the sidecar's resident memory goes: by package in the order it imports them,
and single imports in fresh interpreters (the profile behind docs/benchmarks.md). The
measuring programs are import_profile.py and fresh_import.py beside this module."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .common import sidecar_env

# The programs run in fresh interpreters, by path; `-P` prepends nothing to sys.path, so
# no module of this folder can shadow one the sidecar imports.
_HERE = Path(__file__).parent
_PROFILE = _HERE / "import_profile.py"
_FRESH_IMPORT = _HERE / "fresh_import.py"


def import_profile(*, traced: bool) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-P", str(_PROFILE), "traced" if traced else "rss"],
        capture_output=True, text=True, check=True, timeout=60, env=sidecar_env(),
    ).stdout  # fmt: skip
    data = json.loads(out)
    rows = sorted(data["packages"].items(), key=lambda kv: -kv[1])
    return [{"package": name, "kib": round(value / 1024)} for name, value in rows[:15]]


def _fresh_import(module: str, *after: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-P", str(_FRESH_IMPORT), module, *after],
        capture_output=True, text=True, check=True, timeout=60, env=sidecar_env(),
    ).stdout  # fmt: skip
    return dict(json.loads(out))


def profile_imports() -> dict[str, Any]:
    """Where the sidecar's memory goes before it does anything: by package, and the
    cost of single imports in fresh interpreters."""
    interpreter = _fresh_import("sys")["total_kib"]
    everything = _fresh_import("token_refresher.cli")
    # Each package after the ones it needs anyway, in the order the sidecar imports them.
    chain = ["ssl", "asyncio", "pydantic.main", "httpx2", "httpcore2", "authlib.oauth2.auth"]
    marginal = []
    for index, module in enumerate(chain):
        marginal.append({"module": module, "kib": _fresh_import(module, *chain[:index])["kib"]})
    for module in ("pydantic_settings", "prometheus_client", "argparse"):
        if _importable(module):
            marginal.append({"module": module, "kib": _fresh_import(module, *chain)["kib"]})
    return {
        "interpreter_kib": interpreter,
        "after_import_kib": everything["total_kib"],
        "by_package_rss": import_profile(traced=False),
        "by_package_traced": import_profile(traced=True),
        "marginal_imports": marginal,
    }


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
