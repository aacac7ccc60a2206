"""A task's results in the store: its manifest, written from resolved inputs, and its data, loaded back.

This module knows the runner's resolved inputs and the store, not the task directories: error
messages name the task by the `where` prefix the caller gives.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from repype.benchmark import Benchmark
from repype.config import Config
from repype.errors import TaskError
from repype.runner import InputRun, InputRunner
from repype.store import InputEntry, Manifest, Store
from repype.store.manifests import ManifestHeader
from repype.typing import InputID, PipelineData, TaskData


def manifest_of(
    runner: InputRunner, runs: list[InputRun], spec: dict[str, Any], config: Config, keep: Collection[str]
) -> Manifest:
    """The manifest of resolved inputs `runs`: the fields in `keep`, stored first where they are not yet."""
    entries = [
        InputEntry(
            run.input_id,
            runner.store_values(run, [name for name in run.persistent_refs if name in keep]),
            dict(run.times),
            sorted(set(run.record_keys)),
        )
        for run in runs
    ]
    stage_shas = {stage.id: stage.sha for stage in runner.pipeline.stages}
    return Manifest(spec, config.entries, stage_shas, entries)


def run_from_data(
    runner: InputRunner, input_id: InputID, chunk: PipelineData, config: Config, times: Benchmark
) -> InputRun:
    """An input's resolved state rebuilt from its data, recording the stages whose fields are all there."""
    run = runner.start(input_id, config)
    run.values.update(chunk)
    for stage in runner.pipeline.stages:
        if set(stage.outputs) <= set(chunk) and set(stage.inputs) <= set(run.refs):
            key = runner.key(run, stage)
            runner.record(run, stage, key, _time_or_zero(times, stage.id, input_id))
    for name in chunk:
        if name not in run.refs:
            run.refs[name] = runner.store.describe(chunk[name], field=name)
    return run


def _time_or_zero(times: Benchmark, stage_id: str, input_id: InputID) -> float:
    try:
        return float(times[stage_id, input_id])
    except (KeyError, IndexError):
        return 0.0


def load_data(
    store: Store,
    manifest: ManifestHeader,
    where: str,
    ref_name: str,
    *,
    expected_inputs: list[InputID] | None,
    required_fields: frozenset[str] | None,
    input_ids: list[InputID] | None = None,
    fields: list[str] | None = None,
    lazy: bool = False,
    allow_pickle: bool = True,
) -> TaskData:
    """The data of the task `ref_name` that `manifest` describes (see :meth:`repype.task.Task.load`).

    `expected_inputs` (when loading every input) and `required_fields` (when loading every
    field) are checked against what is stored; a mismatch raises :class:`TaskError`.
    """
    if input_ids is None and expected_inputs is not None:
        _check_input_ids(where, expected_inputs, manifest.input_ids)
    missing = [input_id for input_id in input_ids or () if input_id not in manifest]
    if missing:
        raise KeyError(f"{where}: no stored results for input {missing[0]!r}")
    stored = {input_id: entry.refs for input_id, entry in store.manifest_inputs(manifest, input_ids).items()}
    if required_fields is not None and fields is None:
        _check_fields(where, required_fields, stored)
    data = {}
    for input_id, refs in stored.items():
        names = list(refs) if fields is None else list(fields)
        unknown = [name for name in names if name not in refs]
        if unknown:
            raise KeyError(f"{where}: input {input_id!r} has no stored fields {unknown}")
        data[input_id] = {
            name: store.get_value(
                refs[name],
                lazy=lazy,
                context={"task": ref_name, "input": input_id, "field": name},
                allow_pickle=allow_pickle,
            )
            for name in names
        }
    return data


def _check_input_ids(where: str, expected: list[InputID], stored: list[InputID]) -> None:
    if set(stored) != set(expected):
        raise TaskError(
            f"{where}: stored results are inconsistent with the task specification "
            f"(missing inputs {sorted(map(repr, set(expected) - set(stored)))}, "
            f"spurious inputs {sorted(map(repr, set(stored) - set(expected)))})"
        )


def _check_fields(where: str, required: frozenset[str], stored: Mapping[InputID, Mapping[str, Any]]) -> None:
    for input_id, refs in stored.items():
        if set(refs) != required:
            raise TaskError(
                f"{where}: stored results of input {input_id!r} are inconsistent with the "
                f"pipeline (missing fields {sorted(required - set(refs))}, "
                f"spurious fields {sorted(set(refs) - required)})"
            )
