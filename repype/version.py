"""The version of repype, read from the installed package's metadata (the one source of truth).

`VERSION` is the full version string (e.g. ``"2.0.0.dev0"``); `VERSION_MAJOR`, `VERSION_MINOR`
and `VERSION_PATCH` are its release numbers as ints, `VERSION_SUFFIX` the rest (``"dev0"``, or
``""`` for a final release).
"""

import re
from importlib import metadata

__all__ = ["VERSION", "VERSION_MAJOR", "VERSION_MINOR", "VERSION_PATCH", "VERSION_SUFFIX"]

try:
    VERSION: str = metadata.version("repype")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    VERSION = "0.0.0+unknown"

_RELEASE = re.match(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?[.\-+]?(.*)$", VERSION)
VERSION_MAJOR: int = int(_RELEASE.group(1)) if _RELEASE else 0
VERSION_MINOR: int = int(_RELEASE.group(2) or 0) if _RELEASE else 0
VERSION_PATCH: int = int(_RELEASE.group(3) or 0) if _RELEASE else 0
VERSION_SUFFIX: str = _RELEASE.group(4) if _RELEASE else VERSION
