"""Small files in task directories, written so that readers see the old or the new content, never a part."""

from __future__ import annotations

import contextlib
import os
import pathlib
import stat
import uuid


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Writes `text` (UTF-8, newlines as given) to `path` through a temporary file and a rename.

    Parent directories are created. Concurrent writers each use their own temporary file. A new
    file gets the permissions the process's umask allows (0644 under umask 022), like any file
    opened for writing; a replaced file keeps its permissions.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    # os.open applies the umask to 0o666; tempfile.mkstemp would force 0600 whatever the umask.
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            with contextlib.suppress(FileNotFoundError):
                os.fchmod(file.fileno(), stat.S_IMODE(os.stat(path).st_mode))
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
