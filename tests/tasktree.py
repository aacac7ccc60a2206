"""Helpers for tests that build task trees in temporary directories."""

from __future__ import annotations

import pathlib

import yaml

from repype.task import Task

PIPELINE = ["taskstages.Load", "taskstages.Scale", "taskstages.Threshold", "taskstages.Summarize"]


def write_tree(root: pathlib.Path, specs: dict[str, dict]) -> dict[str, Task]:
    """Write `task.yml` files (keys are paths relative to `root`, "" for the root) and load them.

    Returns the tasks by the same keys; parents are the nearest ancestors in `specs`.
    """
    tasks: dict[str, Task] = {}
    for rel in sorted(specs, key=lambda rel: (rel.count("/") + bool(rel), rel)):
        path = root / rel if rel else root
        path.mkdir(parents=True, exist_ok=True)
        (path / "task.yml").write_text(yaml.safe_dump(specs[rel]))
        parent_rel = _nearest_parent(rel, tasks)
        tasks[rel] = Task(path, specs[rel], tasks.get(parent_rel) if parent_rel is not None else None)
    return tasks


def _nearest_parent(rel: str, known: dict[str, Task]) -> str | None:
    if not rel:
        return None
    parts = rel.split("/")
    for cut in range(len(parts) - 1, -1, -1):
        candidate = "/".join(parts[:cut])
        if candidate in known:
            return candidate
    return None


def reused_stages(task: Task, pipeline, config) -> dict:
    """For each input of `task`, the ids of the stages whose executions the store holds (found quietly)."""
    from repype.runner import InputRunner

    store = task.open_store(mode="r")
    runner = InputRunner(store, pipeline, task.get_marginal_fields(pipeline), str(task.path), quiet=True)
    runs = [runner.start(input_id, config) for input_id in task.input_ids]
    runner.advance_recorded(runs)
    return {run.input_id: list(run.reused) for run in runs}
