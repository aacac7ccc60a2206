"""The batch-wide progress of a run, folded from its status events: executions done, tasks completed, the ETA.

:class:`BatchProgress` reads the events of :mod:`repype.status` journal entries one at a time and
keeps count: per task (executions it ran, reused, where it picked up from, how long it took) and
for the whole batch. It attributes an event to its task by the event's `task` field, or else by
the status node that reported it (or that node's parent), so the events of several tasks may
arrive interleaved and tasks may complete in any order. The batch's plan comes from the root
`batch-plan` event that the command line emits before running; without it (a task run directly
with a status) the counts are kept but there is no total and no ETA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def format_hms(seconds: float) -> str:
    """A duration as `MM:SS`, or `H:MM:SS` from one hour on (as upstream)."""
    seconds = round(seconds)
    hours, minutes, seconds = seconds // 3600, seconds % 3600 // 60, seconds % 60
    return f"{hours:d}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


@dataclass(frozen=True)
class BatchPlan:
    """What the `batch-plan` event announced: tasks, distinct stage executions to run, reused and
    shared between tasks, and the compute time recorded for all but `unestimated` of those to run."""

    tasks: int
    to_run: int
    reused: int
    shared: int
    estimated_seconds: float
    unestimated: int

    @classmethod
    def of(cls, data: dict) -> BatchPlan:
        """The plan of a `batch-plan` event; a missing count is 0."""
        counts = {name: int(data.get(name) or 0) for name in ("tasks", "to_run", "reused", "shared", "unestimated")}
        return cls(estimated_seconds=float(data.get("estimated_seconds") or 0.0), **counts)

    @property
    def from_recorded_times(self) -> bool:
        """True when recorded run times exist for some of the executions to run (the ETA uses them)."""
        return self.unestimated < self.to_run


@dataclass
class TaskProgress:
    """What the events said about one task so far (times are those of the journal entries)."""

    task: str
    started: float | None = None
    finished: float | None = None
    executed: int = 0
    reused: int = 0
    pickup: str | None = None

    @property
    def seconds(self) -> float | None:
        """Seconds from the task's first event to its `completed` event, None until both were seen."""
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started


class BatchProgress:
    """The counts of a running batch, updated by :meth:`observe` for each journal entry."""

    def __init__(self) -> None:
        self.plan: BatchPlan | None = None
        """The plan announced by the `batch-plan` event, None until it is seen."""
        self.started: float | None = None
        """When the batch started: the `batch-plan` event, or else the first event seen."""
        self.executed = 0
        """Stage executions that tasks ran themselves (the sum over `processed` events)."""
        self.reused = 0
        """Stage executions that tasks reused (the sum over `processed` events)."""
        self.completed = 0
        """Tasks whose `completed` event was seen."""
        self.failed: set[str] = set()
        """Tasks an `error` event was reported for."""
        self._progressed: float | None = None
        self._tasks: dict[str, TaskProgress] = {}
        self._task_of_status: dict[str, str] = {}

    def observe(self, entry: dict) -> TaskProgress | None:
        """Counts one journal entry (`status`, `parent`, `time`, `data`); returns the progress of its task, if any."""
        data, now = entry.get("data"), entry.get("time")
        if not isinstance(data, dict):
            return None
        if self.started is None or data.get("info") == "batch-plan":
            self.started = self._progressed = now
        if data.get("info") == "batch-plan":
            self.plan = BatchPlan.of(data)
            return None
        task = self._task_of(data, entry)
        if task is None:
            return None
        progress = self._tasks.setdefault(task, TaskProgress(task))
        self._count(progress, data, now)
        return progress

    def task(self, task: str) -> TaskProgress | None:
        """The progress of `task` (as its events name it), None when no event named it yet."""
        return self._tasks.get(task)

    def remaining_seconds(self, now: float) -> float | None:
        """Seconds the batch still needs at time `now`, or None when nothing tells (no plan, no rate yet).

        With recorded run times, the recorded estimate scaled by the share of executions left
        (executions without a recorded time count as the recorded mean), counting down from the
        last executions reported, to 0 at most. Without any, the rate observed until `now`.
        """
        plan = self.plan
        if plan is None or self.started is None or self._progressed is None:
            return None
        left = max(plan.to_run - self.executed, 0)
        if not left:
            return 0.0
        if plan.from_recorded_times:
            estimate = plan.estimated_seconds / (plan.to_run - plan.unestimated) * left
            return max(estimate - max(now - self._progressed, 0.0), 0.0)
        if not self.executed:
            return None
        return max(now - self.started, 0.0) / self.executed * left

    def eta_text(self, now: float) -> str:
        """`ETA MM:SS` at time `now`, or `ETA unknown`."""
        remaining = self.remaining_seconds(now)
        return "ETA unknown" if remaining is None else f"ETA {format_hms(remaining)}"

    def _task_of(self, data: dict, entry: dict) -> str | None:
        status, parent = entry.get("status"), entry.get("parent")
        task = data.get("task") or self._task_of_status.get(status) or self._task_of_status.get(parent)
        if task is not None and status is not None:
            self._task_of_status[status] = str(task)
        return None if task is None else str(task)

    def _count(self, progress: TaskProgress, data: dict, now: Any) -> None:
        info = data.get("info")
        if progress.started is None and info in ("enter", "start", "process", "processed"):
            progress.started = now
        if info == "start":
            progress.pickup = data.get("pickup")
        elif info == "processed":
            executed, reused = int(data.get("executed") or 0), int(data.get("reused") or 0)
            progress.executed += executed
            progress.reused += reused
            self.executed += executed
            self.reused += reused
            if executed:
                self._progressed = now
        elif info == "completed":
            progress.finished = now
            self.completed += 1
        elif info == "error":
            self.failed.add(progress.task)
