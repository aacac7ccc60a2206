"""Optional dependencies: import them on first use, or say in one line which extra installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA = "results"
"""The extra that installs what tables, plots and xarray views need: `pip install 'repype[results]'`."""


class MissingDependencyError(ImportError):
    """An optional package that a feature needs is not installed (the message says how to install it)."""


def require(module: str, feature: str) -> ModuleType:
    """The module `module`, or :class:`MissingDependencyError` naming `feature` and the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.split(".", 1)[0]
        raise MissingDependencyError(
            f"{feature} needs {package}, which is not installed: pip install 'repype[{EXTRA}]'"
        ) from error
