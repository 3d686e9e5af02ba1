"""Resident memory by module, while a fresh interpreter imports the sidecar
(`token_refresher.cli`).

A meta-path hook wraps every module's execution and charges it the growth of VmRSS (or,
with `traced`, of tracemalloc's traced memory) while its own code ran, minus what the
imports it made cost. hack/benchkit/memory.py runs this file by path with `python -P`
(nothing prepended to sys.path, so only what the sidecar imports is measured), once per
measure, and reads one JSON line: memory before and after, and the cost by top-level
package and by module, in bytes.

Usage: import_profile.py rss|traced
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
import tracemalloc
from collections.abc import Sequence
from types import ModuleType

_TRACED = False
_cost: dict[str, int] = {}
# One frame per module being executed: [memory when it started, what its imports cost].
_stack: list[list[int]] = []


def memory() -> int:
    if _TRACED:
        return tracemalloc.get_traced_memory()[0]
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Loader(importlib.abc.Loader):
    """Wraps a module's loader: measures its execution, less its own imports."""

    def __init__(self, name: str, loader: importlib.abc.Loader) -> None:
        self.name, self.loader = name, loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        _stack.append([memory(), 0])
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        try:
            self.loader.exec_module(module)
        finally:
            start, children = _stack.pop()
            total = memory() - start
            _cost[self.name] = _cost.get(self.name, 0) + total - children
            if _stack:
                _stack[-1][1] += total


class _Finder(importlib.abc.MetaPathFinder):
    """Finds specs with the other finders and wraps their loaders in `_Loader`."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Loader(fullname, spec.loader)
        return spec


def main(mode: str) -> None:
    global _TRACED
    _TRACED = mode == "traced"
    if _TRACED:
        tracemalloc.start(1)
    before = memory()
    sys.meta_path.insert(0, _Finder())
    importlib.import_module("token_refresher.cli")
    after = memory()
    by_package: dict[str, int] = {}
    for name, value in _cost.items():
        top = name.split(".")[0]
        by_package[top] = by_package.get(top, 0) + value
    print(json.dumps({"before": before, "after": after, "packages": by_package, "modules": _cost}))


if __name__ == "__main__":
    main(sys.argv[1])
