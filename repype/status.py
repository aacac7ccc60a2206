"""Progress reporting that works across processes.

A :class:`Status` is a node of a tree of progress reports. Every update is appended as one
JSON line to a journal file shared by the whole tree, so a status handed to a child process
(it pickles to its journal path and ids) reports to the parent, which reads the journal with a
:class:`StatusReader`. In-process subscribers are called directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class Status:
    """A node of a progress tree whose updates go to a journal file.

    Args:
        path: The journal file (created when missing). Default: a new temporary file.
        parent: The parent node, for nodes made by :meth:`derive`.
    """

    def __init__(self, path: str | os.PathLike | None = None, parent: Status | None = None) -> None:
        if path is None:
            path = parent.path if parent is not None else _new_journal()
        self.path = os.fspath(path)
        self.id = uuid.uuid4().hex
        self.parent = parent
        self._subscribers: list[Callable[[dict], None]] = []

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_subscribers"] = []  # callables of this process stay here
        return state

    def derive(self) -> Status:
        """A child node reporting into the same journal."""
        return Status(parent=self)

    def subscribe(self, callback: Callable[[dict], None]) -> None:
        """Calls `callback(update)` for every update of this node and of nodes derived from it in this process."""
        self._subscribers.append(callback)

    def write(self, data: dict[str, Any], intermediate: bool = False) -> None:
        """Reports `data` (JSON-able); an intermediate report replaces the previous intermediate one."""
        entry = {
            "status": self.id,
            "parent": self.parent.id if self.parent is not None else None,
            "intermediate": intermediate,
            "time": time.time(),
            "data": data,
        }
        line = json.dumps(entry, default=str) + "\n"
        with open(self.path, "a", encoding="utf-8") as journal:
            journal.write(line)
        node: Status | None = self
        while node is not None:
            for callback in node._subscribers:
                callback(data)
            node = node.parent


def _new_journal() -> str:
    handle, path = tempfile.mkstemp(prefix="repype-status-", suffix=".jsonl")
    os.close(handle)
    return path


@contextlib.contextmanager
def create() -> Iterator[Status]:
    """A root status with a temporary journal that is removed on exit."""
    status = Status()
    try:
        yield status
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(status.path)


class StatusReader:
    """Reads the updates appended to a journal since the last read (from any process)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._offset = 0

    def read(self) -> list[dict]:
        """New journal entries (`status`, `parent`, `intermediate`, `time`, `data`), oldest first."""
        try:
            with open(self.path, "rb") as journal:
                journal.seek(self._offset)
                chunk = journal.read()
        except FileNotFoundError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


class ConsoleReader:
    """Prints the updates of a status tree to the console while a batch runs (async context manager).

    Args:
        status: The root status whose journal is read.
        intermediate: Also show intermediate updates (progress bars), overwritten in place
            (only on a terminal).
        interval: Seconds between reads of the journal.
        stream: Where to print (default: standard output).
    """

    def __init__(self, status: Status, intermediate: bool = True, interval: float = 0.1, stream: Any = None) -> None:
        self.reader = StatusReader(status.path)
        self.intermediate = intermediate
        self.interval = interval
        self.stream = stream
        self._task: asyncio.Task | None = None
        self._pending_line = False
        self._started: dict[str, float] = {}

    async def __aenter__(self) -> ConsoleReader:
        self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.flush()
        if self._pending_line:
            self._print("")

    async def _follow(self) -> None:
        while True:
            self.flush()
            await asyncio.sleep(self.interval)

    def flush(self) -> None:
        """Prints every update written since the last call."""
        for entry in self.reader.read():
            text = format_update(entry["data"], self._eta(entry))
            if text is None:
                continue
            if entry["intermediate"]:
                if self.intermediate and self._is_terminal():
                    self._print("\r\033[K" + text, end="")
                    self._pending_line = True
            else:
                self._print(("\r\033[K" if self._pending_line else "") + text)
                self._pending_line = False

    def _eta(self, entry: dict) -> str:
        data = entry["data"]
        if data.get("info") == "start":
            self._started[entry["status"]] = entry["time"]
        started = self._started.get(entry["status"])
        step, count = data.get("step"), data.get("step_count")
        if data.get("info") != "process" or started is None or not step or not count:
            return ""
        remaining = (entry["time"] - started) / step * (count - step)
        return f", ETA {remaining:.0f} s"

    def _is_terminal(self) -> bool:
        stream = self.stream or sys.stdout
        return bool(getattr(stream, "isatty", lambda: False)())

    def _print(self, text: str, end: str = "\n") -> None:
        stream = self.stream or sys.stdout
        stream.write(text + end)
        stream.flush()


def format_update(data: dict, eta: str = "") -> str | None:
    """A one-line text for an update, or `None` for updates not worth a line."""
    info = data.get("info")
    if data.get("text") is not None:
        return str(data["text"])
    if info == "enter":
        return f"\n({data['step'] + 1}/{data['step_count']}) Entering task: {data['task']}"
    if info == "start":
        pickup = f"picking up from {data['pickup']}" if data.get("pickup") else "no task to pick up from"
        first = data.get("first_stage") or "nothing (all reused)"
        return f"Starting from stage {first}; {pickup}; {data.get('reused', 0)} stage executions reused from the store"
    if info == "process":
        return f"[{data['step'] + 1}/{data['step_count']}] Processing input {data['input_id']!r}{eta}"
    if info == "processed":
        return f"  input {data['input_id']!r}: {data['reused']} stage(s) reused, {data['executed']} run"
    if info == "storing":
        return "Storing results..."
    if info == "completed":
        return f"Results stored for {data['task']}"
    if info == "error":
        stage = f" in stage '{data['stage']}'" if data.get("stage") else ""
        return f"Error{stage} of task {data.get('task')}:\n{data.get('traceback', '')}"
    if info == "interrupted":
        return f"Batch processing interrupted (exit code {data.get('exit_code')})"
    if info == "progress":
        details = f"{data['details']}: " if data.get("details") else ""
        total = data.get("max_steps")
        return f"{details}{data['step']}/{total}" if total else f"{details}{data['step']}"
    if info in ("start-stage", "skip-stage"):
        return f"  {info.replace('-stage', '')} stage {data.get('stage')}"
    return None


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


def progress(
    status: Status | None, iterable: Iterable, iterations: int | None = None, details: str | None = None
) -> Iterator:
    """Yields the items of `iterable`, reporting `step` and `max_steps` to `status` before each."""
    if iterations is None and hasattr(iterable, "__len__"):
        iterations = len(iterable)
    count = 0
    for count, item in enumerate(iterable, start=1):
        update(status, info="progress", details=details, step=count - 1, max_steps=iterations, intermediate=True)
        yield item
    update(status, info="progress", details=details, step=count, max_steps=iterations or count, intermediate=True)
