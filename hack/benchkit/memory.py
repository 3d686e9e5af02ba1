"""Where the sidecar's resident memory goes: by package in the order it imports them,
and single imports in fresh interpreters (the profile behind docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from .common import sidecar_env

# Resident memory by module: a meta-path hook wraps every module's execution and charges
# it the growth of VmRSS (or of tracemalloc's traced memory) while its own code ran,
# minus what the imports it made cost. Run in a fresh interpreter per measure.
_PROFILE_HOOK = r"""
import json, os, sys, importlib.abc
TRACED = sys.argv[1] == "traced"
if TRACED:
    import tracemalloc
    tracemalloc.start(1)
def memory():
    if TRACED:
        return tracemalloc.get_traced_memory()[0]
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
cost, stack = {}, []
class Loader(importlib.abc.Loader):
    def __init__(self, name, loader):
        self.name, self.loader = name, loader
    def create_module(self, spec):
        stack.append([memory(), 0])
        return self.loader.create_module(spec)
    def exec_module(self, module):
        try:
            self.loader.exec_module(module)
        finally:
            start, children = stack.pop()
            total = memory() - start
            cost[self.name] = cost.get(self.name, 0) + total - children
            if stack:
                stack[-1][1] += total
class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = Loader(name, spec.loader)
        return spec
before = memory()
sys.meta_path.insert(0, Finder())
import token_refresher.cli
after = memory()
by_package = {}
for name, value in cost.items():
    top = name.split(".")[0]
    by_package[top] = by_package.get(top, 0) + value
print(json.dumps({"before": before, "after": after, "packages": by_package, "modules": cost}))
"""

_FRESH_IMPORT = r"""
import importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
for name in sys.argv[2:]:
    importlib.import_module(name)
before = rss()
importlib.import_module(sys.argv[1])
print(json.dumps({"kib": rss() - before, "total_kib": rss()}))
"""


def import_profile(*, traced: bool) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-c", _PROFILE_HOOK, "traced" if traced else "rss"],
        capture_output=True, text=True, check=True, timeout=60, env=sidecar_env(),
    ).stdout  # fmt: skip
    data = json.loads(out)
    rows = sorted(data["packages"].items(), key=lambda kv: -kv[1])
    return [{"package": name, "kib": round(value / 1024)} for name, value in rows[:15]]


def _fresh_import(module: str, *after: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _FRESH_IMPORT, module, *after],
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
    proc = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, check=False, timeout=60
    )
    return proc.returncode == 0
