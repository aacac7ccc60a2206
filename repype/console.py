"""Progress on the console: a status reader that prints the updates of a running batch."""

from __future__ import annotations

import os
import sys
from typing import Any

from repype.status import Status, StatusReader
from repype.typing import PathLike


def intermediate_from_environment() -> bool:
    """False when `REPYPE_CLI_INTERMEDIATE` is `0` (intermediate output muted), else True."""
    return os.environ.get("REPYPE_CLI_INTERMEDIATE", "1").strip() not in ("0", "false", "False")


class ConsoleReader(StatusReader):
    """Prints the updates of a status tree while a batch runs (an async context manager).

    Each line is indented by `indent` spaces per nesting level. Intermediate updates (progress
    bars) are overwritten in place, and shown only on a terminal. Subclasses customise the
    text by overriding :meth:`format`.

    Args:
        filepath: The journal to follow, or the root :class:`~repype.status.Status` itself.
        loop, blocking, interval: See :class:`~repype.status.StatusReader`.
        intermediate: Show intermediate updates. Default: unless `REPYPE_CLI_INTERMEDIATE=0`.
        stream: Where to print (default: standard output).
        indent: Spaces of indentation per nesting level of the reporting status.
        batch: The batch being run (available to subclasses as :attr:`batch`).
        debug: Show the tracebacks of errors that are not a stage's own.
    """

    def __init__(
        self,
        filepath: PathLike | Status,
        loop: Any = None,
        blocking: bool = False,
        *,
        interval: float = 0.1,
        intermediate: bool | None = None,
        stream: Any = None,
        indent: int = 2,
        batch: Any = None,
        debug: bool = False,
    ) -> None:
        if isinstance(filepath, Status):
            filepath = filepath.filepath
        super().__init__(filepath, loop=loop, blocking=blocking, interval=interval)
        self.intermediate = intermediate_from_environment() if intermediate is None else intermediate
        self.stream = stream
        self.indent = indent
        self.batch = batch
        self.debug = debug
        self._pending_line = False
        self._started: dict[str, float] = {}
        self._executions = {"run": 0, "reused": 0}

    async def __aexit__(self, *exc_info: Any) -> None:
        await super().__aexit__(*exc_info)
        if self._pending_line:
            self._print("")
            self._pending_line = False

    def format(self, positions: list[int], status: Any, intermediate: bool) -> str | None:
        """The text of one update, or None for updates not worth a line (see :func:`format_update`)."""
        if isinstance(status, dict):
            if status.get("info") == "processed":
                self._executions["run"] += status.get("executed", 0)
                self._executions["reused"] += status.get("reused", 0)
            if status.get("info") == "finished":
                return format_summary(status, **self._executions)
            return format_update(status, self._eta(status), debug=self.debug)
        return None if status is None else str(status)

    def handle_new_status(self, positions: list[int], status: Any, intermediate: bool) -> None:
        """Prints the formatted update (intermediate ones in place, on a terminal only)."""
        if intermediate and status is None:
            if self._pending_line:
                self._print("\r\033[K", end="")
                self._pending_line = False
            return
        text = self.format(positions, status, intermediate)
        if text is None:
            return
        margin = " " * (self.indent * (len(positions) - 1))
        text = "\n".join(margin + line if line else line for line in str(text).split("\n"))
        if intermediate:
            if self.intermediate and self._is_terminal():
                self._print("\r\033[K" + text.replace("\n", " "), end="")
                self._pending_line = True
        else:
            self._print(("\r\033[K" if self._pending_line else "") + text)
            self._pending_line = False

    def _eta(self, data: dict) -> str:
        entry = self.entry or {}
        if data.get("info") == "start":
            self._started[entry.get("status")] = entry.get("time")
        started = self._started.get(entry.get("status"))
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


def _format_error(data: dict, debug: bool) -> str:
    """A failing stage shows its own traceback; any other error one line (and its traceback with `debug`)."""
    stage = f" in stage '{data['stage']}'" if data.get("stage") else ""
    where = f" on input {data['input_id']!r}" if data.get("input_id") is not None else ""
    text = f"Error{stage}{where} of task {data.get('task')}"
    if data.get("stage") or debug or "message" not in data:
        return f"{text}:\n{data.get('traceback', '').rstrip()}"
    message = str(data["message"]).removeprefix(f"task {data.get('task')}: ")  # the header names the task
    return f"{text}: {message}"


def format_summary(data: dict, run: int, reused: int) -> str:
    """The closing line of a batch: tasks completed, failed and not started, stage executions, seconds."""
    tasks = f"{data['completed']} task(s) completed"
    if data.get("failed"):
        tasks += f", {data['failed']} failed"
    if data.get("skipped"):
        tasks += f", {data['skipped']} not started"
    executions = f"{run} stage execution(s) run, {reused} reused from the store"
    return f"\nBatch finished in {format_hms(data['seconds'])}: {tasks}; {executions}"


def format_hms(seconds: float) -> str:
    """A duration as `MM:SS`, or `H:MM:SS` from one hour on (as upstream)."""
    seconds = round(seconds)
    hours, minutes, seconds = seconds // 3600, seconds % 3600 // 60, seconds % 60
    return f"{hours:d}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def format_update(data: dict, eta: str = "", debug: bool = False) -> str | None:
    """A one-line text for an update, or `None` for updates not worth a line (`debug`: errors with tracebacks)."""
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
        return _format_error(data, debug)
    if info == "interrupted":
        code = data.get("exit_code")
        return "Batch processing interrupted" + (f" (exit code {code})" if code is not None else "")
    if info == "progress":
        details = f"{data['details']}: " if data.get("details") else ""
        total = data.get("max_steps")
        return f"{details}{data['step']}/{total}" if total else f"{details}{data['step']}"
    if info in ("start-stage", "skip-stage"):
        return f"  {info.replace('-stage', '')} stage {data.get('stage')}"
    return None
