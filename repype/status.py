"""Progress reporting that works across processes.

A :class:`Status` is a node of a tree of progress reports. Every update is appended as one
JSON line to a journal file shared by the whole tree, so a status handed to a child process
(it pickles to its journal path and ids) reports to the parent, which follows the journal with
a :class:`StatusReader`. In-process subscribers are called directly. Console output lives in
:mod:`repype.console`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import pathlib
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

from repype.typing import PathLike

_JOURNALS: dict[str, BinaryIO] = {}
"""The journals this process appends to, kept open (opening a file per update is slow)."""
_JOURNALS_LOCK = threading.Lock()


def _append(path: str, line: bytes) -> None:
    with _JOURNALS_LOCK:
        journal = _JOURNALS.get(path)
        if journal is None or journal.closed:
            journal = _JOURNALS[path] = open(path, "ab", buffering=0)  # noqa: SIM115 (kept open on purpose)
    journal.write(line)  # one unbuffered write per line: lines of several processes never interleave


def _close_journal(path: str) -> None:
    with _JOURNALS_LOCK:
        journal = _JOURNALS.pop(path, None)
    if journal is not None:
        journal.close()


@atexit.register
def _close_journals() -> None:
    for path in list(_JOURNALS):
        _close_journal(path)


class Status:
    """A node of a progress tree whose updates go to a journal file.

    Args:
        parent: The parent node (the child reports into the parent's journal).
        path: For a root node, the journal file, or an existing directory in which the journal
            is created (as upstream). Default: a new temporary file.
    """

    def __init__(self, parent: Status | None = None, path: PathLike | None = None) -> None:
        self.id = uuid.uuid4().hex
        self.parent = parent
        if parent is not None:
            journal = parent.path
        elif path is None:
            journal = _new_journal()
        elif os.path.isdir(path):
            journal = os.path.join(path, f"{self.id}.jsonl")
        else:
            journal = os.fspath(path)
        self.path: str = journal
        self.depth: int = 0 if parent is None else parent.depth + 1
        self._subscribers: list[Callable[[Any], None]] = []

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_subscribers"] = []  # callables of this process stay here
        return state

    @property
    def filepath(self) -> pathlib.Path:
        """The journal file this status (and its whole tree) writes to."""
        return pathlib.Path(self.path)

    @property
    def root(self) -> Status:
        """The root node of this status's tree."""
        return self.parent.root if self.parent is not None else self

    def derive(self) -> Status:
        """A child node reporting into the same journal."""
        return Status(parent=self)

    def subscribe(self, callback: Callable[[Any], None]) -> None:
        """Calls `callback(update)` for every update of this node and of nodes derived from it in this process."""
        self._subscribers.append(callback)

    def write(self, data: Any, intermediate: bool = False) -> None:
        """Reports `data` (JSON-able: a dict, a string, a list).

        An intermediate report replaces the previous intermediate one; intermediate `None`
        clears it.
        """
        entry = {
            "status": self.id,
            "parent": self.parent.id if self.parent is not None else None,
            "depth": self.depth,
            "intermediate": intermediate,
            "time": time.time(),
            "data": data,
        }
        _append(self.path, (json.dumps(entry, default=str) + "\n").encode("utf-8"))
        node: Status | None = self
        while node is not None:
            for callback in node._subscribers:
                callback(data)
            node = node.parent

    def intermediate(self, data: Any = None) -> None:
        """Reports `data` as an intermediate update; `None` clears the current intermediate update."""
        self.write(data, intermediate=True)

    def progress(self, iterable: Iterable, iterations: int | None = None, details: Any = None) -> Iterator:
        """Yields the items of `iterable`, reporting `step` and `max_steps` before each (see :func:`progress`)."""
        if iterations is None and hasattr(iterable, "__len__"):
            iterations = len(iterable)
        count = 0
        for count, item in enumerate(iterable, start=1):
            self.intermediate(dict(info="progress", details=details, step=count - 1, max_steps=iterations))
            yield item
        self.intermediate(dict(info="progress", details=details, step=count, max_steps=iterations or count))

    def update(self) -> None:
        """Makes the updates so far visible to readers (they already are: every update is written at once)."""


def _new_journal() -> str:
    handle, path = tempfile.mkstemp(prefix="repype-status-", suffix=".jsonl")
    os.close(handle)
    return path


@contextlib.contextmanager
def create() -> Iterator[Status]:
    """A root status whose journal file exists while the context lasts and is removed on exit."""
    status = Status()
    try:
        yield status
    finally:
        _close_journal(status.path)
        with contextlib.suppress(FileNotFoundError):
            os.remove(status.path)


class StatusReader:
    """Follows a journal written by a status tree (from any process).

    :meth:`read` returns the entries appended since the last read. Used as an async context
    manager, the reader follows the journal and calls :meth:`handle_new_status` for each
    update; subclasses override it (as upstream's readers do).

    Args:
        filepath: The journal (:attr:`Status.filepath`).
        loop: Kept for upstream compatibility; the reader follows the journal on the running loop.
        blocking: Follow the journal in a thread of its own, so that updates are handled while
            the event loop's thread is busy with blocking work (e.g. ``rc.run(...)`` called
            inside ``async with``).
        interval: Seconds between reads of the journal.
    """

    def __init__(
        self,
        filepath: PathLike,
        loop: asyncio.AbstractEventLoop | None = None,
        blocking: bool = False,
        interval: float = 0.1,
    ) -> None:
        self.filepath = pathlib.Path(filepath)
        self.path = os.fspath(filepath)
        self.loop = loop
        self.blocking = blocking
        self.interval = interval
        self.entry: dict | None = None
        """The journal entry being handled (its `time`, `status`, `depth`, ...)."""
        self._offset = 0
        self._positions: list[int] = []
        self._lock = threading.Lock()
        self._task: asyncio.Task | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def read(self) -> list[dict]:
        """New journal entries (`status`, `parent`, `depth`, `intermediate`, `time`, `data`), oldest first."""
        try:
            with open(self.path, "rb") as journal:
                journal.seek(self._offset)
                chunk = journal.read()
        except FileNotFoundError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def flush(self) -> None:
        """Handles every update written since the last call."""
        with self._lock:  # the following thread and the final flush must not handle an entry twice
            for entry in self.read():
                self.entry = entry
                self.handle_new_status(self._position_of(entry), entry["data"], entry["intermediate"])

    def _position_of(self, entry: dict) -> list[int]:
        depth = entry.get("depth", 0)
        positions = self._positions[: depth + 1]
        positions += [-1] * (depth + 1 - len(positions))
        if not entry["intermediate"]:
            positions[depth] += 1
        self._positions = positions
        return [max(position, 0) for position in positions]

    def handle_new_status(self, positions: list[int], status: Any, intermediate: bool) -> None:
        """Called for each update: `positions` has one item per nesting level (the last is the index
        of the update within its status), `status` is the reported data (`None` clears an
        intermediate update). Does nothing here; subclasses decide."""

    async def __aenter__(self) -> StatusReader:
        if self.blocking:
            self._stop.clear()
            self._thread = threading.Thread(target=self._follow_in_thread, daemon=True)
            self._thread.start()
        else:
            self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush()

    async def _follow(self) -> None:
        while True:
            self.flush()
            await asyncio.sleep(self.interval)

    def _follow_in_thread(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()


def update(status: Status | None, plain_text: str | None = None, intermediate: bool = False, **kwargs: Any) -> None:
    """Reports `plain_text` and/or `kwargs` to `status`; does nothing when `status` is None."""
    if status is None:
        return
    data = dict(kwargs)
    if plain_text is not None:
        data["text"] = plain_text
    status.write(data, intermediate=intermediate)


def derive(status: Status | None) -> Status | None:
    """A child of `status`, or None when `status` is None."""
    return None if status is None else status.derive()


def progress(status: Status | None, iterable: Iterable, iterations: int | None = None, details: Any = None) -> Iterator:
    """Yields the items of `iterable`, reporting `step` and `max_steps` to `status` before each.

    A last report after the final item has `step` equal to the number of items. Without a
    status, the items are passed through.
    """
    if status is None:
        yield from iterable
        return
    yield from status.progress(iterable, iterations, details)
