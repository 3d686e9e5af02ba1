"""A package's public names imported on first use (PEP 562), for both packages' `__init__`.

Importing a package runs its `__init__` before any of its modules: an `__init__` that
imports its public names loads the whole package for a process that wants one module.
The operator's console script binds its health port before it loads kopf, and the
sidecar's its status port before pydantic; both would wait on such an `__init__`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, module_of: Mapping[str, str]) -> Callable[[str], object]:
    """The module `__getattr__` of `package`: name → `package.<module_of[name]>.name`,
    imported on first use and kept in the package's namespace after that."""

    def __getattr__(name: str) -> object:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
