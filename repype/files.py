"""Small files in task directories, written so that readers see the old or the new content, never a part."""

from __future__ import annotations

import os
import pathlib
import tempfile


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Writes `text` (UTF-8, newlines as given) to `path` through a temporary file and a rename.

    Parent directories are created. Concurrent writers each use their own temporary file.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise
