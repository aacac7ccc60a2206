"""Modules imported on first use, so that paths which never need them (listing tasks, loading a
JSON field from a fresh process) do not pay for their import."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module `name`, importing it on the first attribute access."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)


numpy: Any = LazyModule("numpy")
"""numpy, imported when first used."""
