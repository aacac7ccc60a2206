"""`ls`: the tasks of a store with their inputs and fields, and whether each is complete or damaged.

Cheaper than `verify`: it reads every task's manifest and checks that the values it names are
present, but does not re-hash them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from repype.store import codecs, layout
from repype.store.errors import StoreError

COMPLETE, DAMAGED, NOT_STORED = "complete", "damaged", "not stored"


@dataclass
class TaskEntry:
    """One task of a listing: `status` is `complete`, `damaged` (then `problem` says why) or `not stored`
    (a task of the tree without results in the store)."""

    name: str
    status: str
    inputs: int = 0
    fields: list[str] = field(default_factory=list)
    created: float | None = None
    problem: str | None = None


@dataclass
class TaskListing:
    """The result of :func:`list_tasks`; `ok` is False when a task is damaged."""

    store: str
    tasks: list[TaskEntry]

    @property
    def ok(self) -> bool:
        """True when no task is damaged."""
        return all(task.status != DAMAGED for task in self.tasks)

    def format(self) -> str:
        """A readable table, one task a line, and a summary line."""
        width = max([4, *(len(task.name) for task in self.tasks)])
        lines = [f"{'task':<{width}}  {'status':<10}  {'inputs':>6}  fields"]
        for task in self.tasks:
            detail = task.problem if task.problem else ", ".join(task.fields)
            lines.append(f"{task.name:<{width}}  {task.status:<10}  {task.inputs:>6}  {detail}")
        counts = {status: sum(task.status == status for task in self.tasks) for status in (COMPLETE, DAMAGED)}
        summary = f"{len(self.tasks)} task(s) in {self.store}: {counts[COMPLETE]} complete, {counts[DAMAGED]} damaged"
        missing = sum(task.status == NOT_STORED for task in self.tasks)
        if missing:
            summary += f", {missing} not stored (run them)"
        return "\n".join([*lines, summary])


def list_tasks(store: Any, names: Iterable[str] | None = None, expected: Iterable[str] = ()) -> TaskListing:
    """Lists the tasks `names` of `store` (default: all); `expected` names that are missing are `not stored`."""
    names = store.tasks() if names is None else list(names)
    views = dict(_view(store, name) for name in names)
    entries = [_entry(name, view) for name, view in views.items()]
    _mark_missing_values(store, entries, views)
    entries += [TaskEntry(name, NOT_STORED) for name in expected if name not in set(names)]
    return TaskListing(store.url, sorted(entries, key=lambda entry: entry.name))


def _view(store: Any, name: str) -> tuple[str, Any]:
    """`(name, TaskView)`, or `(name, reason)` when the task's ref or manifest cannot be read."""
    try:
        return name, store.task(name)
    except (StoreError, KeyError, TypeError, ValueError) as error:
        return name, f"{type(error).__name__}: {error}"


def _entry(name: str, view: Any) -> TaskEntry:
    if isinstance(view, str):
        return TaskEntry(name, DAMAGED, problem=view)
    return TaskEntry(name, COMPLETE, len(view.input_ids), view.fields, view.created)


def _mark_missing_values(store: Any, entries: list[TaskEntry], views: dict[str, Any]) -> None:
    """Marks complete tasks damaged when a value their manifest names is not in the store (one request each)."""
    wanted: dict[str, list[tuple[TaskEntry, Any, str]]] = {}
    for entry in entries:
        if entry.status != COMPLETE:
            continue
        view = views[entry.name]
        for input_id in view.input_ids:
            for name, ref in view.refs(input_id).items():
                if ref.get("stored") and not codecs.is_inline(ref):
                    wanted.setdefault(ref["digest"], []).append((entry, input_id, name))
    keys = {digest: layout.metadata_key(layout.blob_path(digest)) for digest in wanted}
    present = store.backend.get_many(keys.values())
    for digest, users in wanted.items():
        if present[keys[digest]] is not None:
            continue
        for entry, input_id, name in users:
            if entry.status == COMPLETE:
                entry.status = DAMAGED
                entry.problem = f"value {digest} of input {input_id!r}, field '{name}' is missing (repype store verify)"
