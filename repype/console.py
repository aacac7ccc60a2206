"""Progress on the console: a status reader that prints the updates of a running batch (plain lines, or
above a live bar on a terminal)."""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Any

from repype.progress import BatchProgress, TaskProgress, format_hms
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

    Once the batch's `batch-plan` event is seen (the command line emits it before running), the
    reader shows the batch as a whole, in any order of events and of completing tasks: one
    unindented line per task as it completes (its executions run and reused, its seconds, the
    batch's executions done of those to run and the ETA; see :func:`format_completed`), the
    per-input lines left out; on a terminal with intermediate updates shown, above a live bar
    (see :mod:`repype.livebar`); without a terminal, plain lines only. The closing summary
    counts executions run, reused and shared, and tasks completed and failed.

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
        self.progress = BatchProgress()
        """The batch's counts so far, from the updates handled (see :class:`repype.progress.BatchProgress`)."""
        self._pending_line = False
        self._started: dict[str, float] = {}
        self._bar: Any = None

    async def __aexit__(self, *exc_info: Any) -> None:
        await super().__aexit__(*exc_info)
        self._close_bar()
        if self._pending_line:
            self._print("")
            self._pending_line = False

    def format(self, positions: list[int], status: Any, intermediate: bool) -> str | None:
        """The text of one update, or None for updates not worth a line (see :func:`format_update`)."""
        if isinstance(status, dict):
            info = status.get("info")
            if info == "finished":
                shared = self.progress.plan.shared if self.progress.plan is not None else None
                return format_summary(status, self.progress.executed, self.progress.reused, shared)
            if info == "completed":
                return format_completed(status, self.progress, (self.entry or {}).get("time"))
            if self.progress.plan is not None and info in _PER_INPUT:
                return None  # the batch shows one line per task
            return format_update(status, self._eta(status), debug=self.debug)
        return None if status is None else str(status)

    def handle_new_status(self, positions: list[int], status: Any, intermediate: bool) -> None:
        """Counts the update, then prints it (intermediate ones in place, on a terminal only)."""
        task = self.progress.observe(self.entry or {"data": status})
        if _is(status, "batch-plan") and self._bar is None and self._shows_intermediate():
            from repype.livebar import LiveBar  # rich is imported only to draw a bar

            self._bar = LiveBar(self._stream(), self.progress)
        if intermediate and status is None:
            if self._bar is not None:
                self._bar.update(doing="")
            elif self._pending_line:
                self._print("\r\033[K", end="")
                self._pending_line = False
            return
        if _is(status, "finished"):
            self._close_bar()
        text = self.format(positions, status, intermediate)
        if self._bar is not None:
            self._bar.update(doing=self._doing(task, text) if intermediate else None)
        if text is None:
            return
        depth = 0 if self.progress.plan is not None else len(positions) - 1
        margin = " " * (self.indent * depth)
        text = "\n".join(margin + line if line else line for line in str(text).split("\n"))
        if intermediate:
            if self._bar is None and self._shows_intermediate():
                self._print("\r\033[K" + text.replace("\n", " "), end="")
                self._pending_line = True
        elif self._bar is not None:
            self._bar.print(text)
        else:
            self._print(("\r\033[K" if self._pending_line else "") + text)
            self._pending_line = False

    @staticmethod
    def _doing(task: TaskProgress | None, text: str | None) -> str:
        name = display_task(task.task) if task is not None else ""
        return ": ".join(part for part in (name, (text or "").strip().replace("\n", " ")) if part)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

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

    def _stream(self) -> Any:
        return self.stream or sys.stdout

    def _shows_intermediate(self) -> bool:
        return self.intermediate and bool(getattr(self._stream(), "isatty", lambda: False)())

    def _print(self, text: str, end: str = "\n") -> None:
        stream = self._stream()
        stream.write(text + end)
        stream.flush()


def _is(status: Any, info: str) -> bool:
    return isinstance(status, dict) and status.get("info") == info


_PER_INPUT = ("enter", "start", "process", "processed")
"""Updates that a batch-wide display leaves out (their counts show in the line of the completed task)."""


def display_task(task: str) -> str:
    """A task's path as printed: relative to the current directory when it lies below it, else as given."""
    path, here = pathlib.Path(task), pathlib.Path.cwd()
    if path.is_absolute() and (path == here or here in path.parents):
        return path.relative_to(here).as_posix() if path != here else "."
    return task


def format_completed(data: dict, progress: BatchProgress | None = None, now: float | None = None) -> str:
    """The line of a completed task: `[3/9] completed sweep/t1 (2.1 s): 8 run, 16 reused, picked up from
    sweep/t0; 40/120 stage executions, ETA 00:12`.

    Shows what `progress` knows: the task's counts once its start was seen, the batch's counts
    and ETA (at time `now`) once the batch's plan was seen; without `progress`, `completed TASK`.
    """
    task = progress.task(data["task"]) if progress is not None else None
    plan = progress.plan if progress is not None else None
    text = f"completed {display_task(data['task'])}"
    if plan is not None:
        text = f"[{progress.completed}/{plan.tasks}] {text}"
    if task is not None and task.started is not None:
        seconds = f" ({task.seconds:.1f} s)" if task.seconds is not None else ""
        pickup = f", picked up from {display_task(task.pickup)}" if task.pickup else ""
        text += f"{seconds}: {task.executed} run, {task.reused} reused{pickup}"
    if plan is not None and now is not None:
        text += f"; {progress.executed}/{plan.to_run} stage executions, {progress.eta_text(now)}"
    return text


def _format_error(data: dict, debug: bool) -> str:
    """A failing stage shows its own traceback; any other error one line (and its traceback with `debug`)."""
    stage = f" in stage '{data['stage']}'" if data.get("stage") else ""
    where = f" on input {data['input_id']!r}" if data.get("input_id") is not None else ""
    text = f"Error{stage}{where} of task {data.get('task')}"
    if data.get("stage") or debug or "message" not in data:
        return f"{text}:\n{data.get('traceback', '').rstrip()}"
    message = str(data["message"]).removeprefix(f"task {data.get('task')}: ")  # the header names the task
    return f"{text}: {message}"


def format_summary(data: dict, run: int, reused: int, shared: int | None = None) -> str:
    """The closing line of a batch: seconds, tasks completed, failed and not started; stage executions
    run, reused, and (when the batch's plan told) shared between tasks."""
    tasks = f"{data['completed']} task(s) completed, {data.get('failed', 0)} failed"
    if data.get("skipped"):
        tasks += f", {data['skipped']} not started"
    executions = f"{run} stage execution(s) run, {reused} reused from the store"
    if shared is not None:
        executions += f", {shared} shared between tasks"
    return f"\nBatch finished in {format_hms(data['seconds'])}: {tasks}; {executions}"


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
    if info == "processed" and data.get("inputs") is not None:  # inputs the store resolved entirely
        return f"  {data['inputs']} input(s): {data['reused']} stage(s) reused, {data['executed']} run"
    if info == "processed":
        return f"  input {data['input_id']!r}: {data['reused']} stage(s) reused, {data['executed']} run"
    if info == "storing":
        return "Storing results..."
    if info == "completed":
        return format_completed(data)
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
