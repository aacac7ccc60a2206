"""Why a stage must run: the nearest recorded execution of the same stage, and which key parts differ.

For each input of a pending task, the stages whose executions the store holds are adopted as a
run would (and say nothing). Every later stage that cannot be reused is compared with each
recorded execution of the same stage id, from any task in the store (records of format 2 hold
their key documents); the nearest is the one with the fewest differing key parts: the stage's
code, each hyperparameter, the key material, each field read, the key schema. A field that a
re-running stage produces is unknown before the run: it counts as differing, naming the
producer and why it re-runs. Stages after one that re-runs may still be reused by the run when
the re-run produces the same values (early cutoff); this dry run cannot know that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import IO, Any

from repype.canonical import from_canonical
from repype.runner import InputRun, InputRunner
from repype.stage import Stage
from repype.store import StoreMissingError
from repype.store.explain import SOURCE
from repype.store.history import executions_by_stage
from repype.store.manifests import Record
from repype.typing import InputID

RECOMPUTED = "(recomputed)"
"""The digest put in a key document for a field a re-running stage produces (unknown before the run)."""

NO_EXECUTION = "no execution of this stage recorded"


@dataclass
class StageWhy:
    """Why `stage` cannot be reused for `input_ids`: the key parts that differ from its nearest execution.

    `nearest` maps each of `input_ids` to the record key of its nearest execution (None when
    the store holds no comparable execution of this stage).
    """

    stage: str
    input_ids: list[InputID]
    reasons: list[str]
    nearest: dict[InputID, str | None] = field(default_factory=dict)


@dataclass
class TaskWhy:
    """The stages of one pending task that cannot be reused, grouped by inputs that agree on the reasons."""

    task: str
    stages: list[StageWhy] = field(default_factory=list)


@dataclass
class _Produced:
    """A field whose value a re-running stage recomputes: the stage, and its reasons."""

    stage: str
    reasons: list[str]


def why(context: Any, name: str) -> TaskWhy:
    """Why the stages of the task of `context` (a :class:`repype.batch.RunContext`) cannot be reused.

    `name` labels the task in the result. Reads the store only (nothing runs, nothing is written).
    """
    task, pipeline = context.task, context.pipeline
    try:
        store = task.open_store(mode="r")
    except StoreMissingError:
        nobody = dict.fromkeys(task.input_ids)
        stages = [StageWhy(stage.id, list(task.input_ids), [NO_EXECUTION], dict(nobody)) for stage in pipeline.stages]
        return TaskWhy(name, stages)
    runner = InputRunner(store, pipeline, task.get_marginal_fields(pipeline), str(task.path), quiet=True)
    runs = [runner.start(input_id, context.config) for input_id in task.input_ids]
    runner.advance_recorded(runs)
    if all(run.next_stage >= len(pipeline.stages) for run in runs):
        return TaskWhy(name)  # everything is recorded: no need to read the store's other records
    history = {
        stage_id: [(record, key_parts(record.document)) for record in records if record.document is not None]
        for stage_id, records in executions_by_stage(store).items()
    }
    per_input = {run.input_id: _input_reasons(runner, run, history) for run in runs}
    return TaskWhy(name, _grouped(pipeline.stages, per_input))


def _input_reasons(
    runner: InputRunner, run: InputRun, history: dict[str | None, list[tuple[Record, Parts]]]
) -> dict[str, tuple[list[str], str | None]]:
    """For each stage of `run` that cannot be reused: the reasons and the nearest record's key."""
    produced: dict[str, _Produced] = {}
    found: dict[str, tuple[list[str], str | None]] = {}
    for stage in runner.pipeline.stages[run.next_stage :]:
        if not runner.is_enabled(run, stage):
            continue
        key = runner.key(run, stage)
        if not any(name in produced for name in stage.inputs):
            record = runner.store.get_record(key)
            if record is not None:  # reused even though an earlier stage re-runs (it reads none of its outputs)
                run.refs.update(record.outputs)
                continue
        reasons, nearest = _nearest(stage, run.documents[key], history.get(stage.id), produced)
        found[stage.id] = (reasons, nearest)
        for name in stage.outputs:
            run.refs[name] = {"digest": RECOMPUTED}
            produced[name] = _Produced(stage.id, reasons)
    return found


Parts = dict[tuple[str, str], str]
"""The key parts of a key document, each as comparable text (see :func:`key_parts`)."""

_ORDER = {"schema": 0, "code": 1, "hyperparameter": 2, "extra": 3, "field": 4}


def key_parts(document: dict[str, Any]) -> Parts:
    """The parts of a key document that `--why` counts, each as text that compares like the value.

    `("schema", "")`, `("code", "")` (the stage sha, which covers the distributions), `("extra", "")`
    (key material), `("hyperparameter", "a/b")` for each hyperparameter (nested ones by path) and
    `("field", name)` for each field read (its digest).
    """
    parts = {
        ("schema", ""): _text(document.get("schema")),
        ("code", ""): str(document.get("stage")),
        ("extra", ""): _text(document.get("extra")),
    }
    for path, value in _flat(from_canonical(document.get("hyperparameters", {}))).items():
        parts["hyperparameter", path] = _text(value)
    for name, digest in document.get("inputs", {}).items():
        parts["field", name] = str(digest)
    return parts


def _differing(now: Parts, before: Parts) -> list[tuple[str, str]]:
    keys = [key for key in now.keys() | before.keys() if now.get(key) != before.get(key)]
    return sorted(keys, key=lambda key: (_ORDER[key[0]], key[1]))


def _nearest(
    stage: Stage, wanted: dict[str, Any], executions: list[tuple[Record, Parts]] | None, produced: dict[str, _Produced]
) -> tuple[list[str], str | None]:
    """The reasons against the execution with the fewest differing parts (the latest among equals).

    `executions` are the recorded executions of the stage that have key documents (None: the
    store holds no execution of the stage at all).
    """
    if executions is None:
        return [NO_EXECUTION], None
    if not executions:
        return ["its recorded executions predate key documents (format 1): cannot say what differs"], None
    parts = key_parts(wanted)
    record, _ = min(executions, key=lambda pair: (len(_differing(parts, pair[1])), -pair[0].created))
    reasons = differences(stage.id, wanted, record.document, produced)
    return reasons or ["its key matches a recorded execution that could not be read"], record.key


def differences(stage_id: str, wanted: dict[str, Any], recorded: dict[str, Any], produced: dict[str, Any]) -> list[str]:
    """The key parts in which the key document `wanted` of stage `stage_id` differs from `recorded`, as sentences.

    One sentence per differing part of :func:`key_parts`. `produced` maps the fields that
    re-running stages recompute to their producer (`stage`, `reasons`); such a field always differs.
    """
    now, before = key_parts(wanted), key_parts(recorded)
    return [
        _sentence(stage_id, kind, name, wanted, recorded, now, before, produced)
        for kind, name in _differing(now, before)
    ]


def _sentence(
    stage_id: str,
    kind: str,
    name: str,
    wanted: dict[str, Any],
    recorded: dict[str, Any],
    now: Parts,
    before: Parts,
    produced: dict[str, Any],
) -> str:
    old, new = before.get((kind, name), "(unset)"), now.get((kind, name), "(unset)")
    if kind == "schema":
        return f"key schema {old} → {new}"
    if kind == "code":
        versions = wanted.get("distributions", {}), recorded.get("distributions", {})
        changed = [
            f"{package} {versions[1].get(package, '(none)')} → {versions[0].get(package, '(none)')}"
            for package in sorted(set(versions[0]) | set(versions[1]))
            if versions[0].get(package) != versions[1].get(package)
        ]
        return f"code of stage '{stage_id}' changed" + (f" ({', '.join(changed)})" if changed else "")
    if kind == "hyperparameter":
        return f"{stage_id}/{name}: {old} → {new}"
    if kind == "extra":
        return f"key material of stage '{stage_id}' changed"
    if name in produced:
        because = "; ".join(_short(reason) for reason in produced[name].reasons)
        return f"field '{name}' differs (produced by stage '{produced[name].stage}', which re-runs because {because})"
    if (kind, name) not in now or (kind, name) not in before:
        return f"field '{name}' is {'now' if (kind, name) in now else 'no longer'} read"
    if name == SOURCE:
        return f"field '{name}' differs (no execution of this stage for this input is recorded)"
    return f"field '{name}' differs"


def _short(reason: str) -> str:
    """A reason without the explanation of an upstream field (one level of "because" is enough)."""
    return reason.split(" (", 1)[0] if reason.startswith("field '") else reason


def _flat(settings: Any, prefix: str = "") -> dict[str, Any]:
    """Nested hyperparameters as `a/b` paths to values."""
    if not isinstance(settings, dict) or not settings:
        return {prefix: settings} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        flat.update(_flat(value, f"{prefix}{key}/") if isinstance(value, dict) and value else {f"{prefix}{key}": value})
    return flat


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr, ensure_ascii=False)


def _grouped(stages: list[Stage], per_input: dict[InputID, dict[str, tuple[list[str], str | None]]]) -> list[StageWhy]:
    """One entry per stage and set of inputs that agree on the reasons (in pipeline order)."""
    result = []
    for stage in stages:
        groups: dict[tuple[str, ...], StageWhy] = {}
        for input_id, found in per_input.items():
            if stage.id in found:
                reasons, nearest = found[stage.id]
                group = groups.setdefault(tuple(reasons), StageWhy(stage.id, [], reasons))
                group.input_ids.append(input_id)
                group.nearest[input_id] = nearest
        result += groups.values()
    return result


def format_why(result: TaskWhy, all_inputs: list[InputID]) -> list[str]:
    """The lines `--why` prints for one task: one per stage and group of inputs, then one per reason."""
    if not result.stages:
        return ["every stage execution is in the store: nothing needs to run"]
    lines = []
    for entry in result.stages:
        inputs = (
            "all inputs" if entry.input_ids == list(all_inputs) else f"input(s) {', '.join(map(str, entry.input_ids))}"
        )
        keys = list(entry.nearest.values())
        nearest = f", nearest recorded execution {keys[0][:12]}" if len(keys) == 1 and keys[0] else ""
        lines.append(f"stage '{entry.stage}' re-runs for {inputs}{nearest}:")
        lines += [f"  {reason}" for reason in entry.reasons]
    return lines


def why_json(result: TaskWhy) -> dict[str, Any]:
    """`result` as plain JSON data (`nearest` as `[input_id, record key]` pairs: input ids keep their type)."""
    stages = [
        {
            "stage": entry.stage,
            "input_ids": entry.input_ids,
            "reasons": entry.reasons,
            "nearest": [*entry.nearest.items()],
        }
        for entry in result.stages
    ]
    return {"task": result.task, "stages": stages}


def print_why(root_name: Any, contexts: list[Any], stream: IO[str], as_json: bool = False) -> None:
    """`repype ROOT --why`: for each pending task of `contexts`, why its stages cannot be reused.

    `root_name` gives the name to print for a task's path; `as_json` prints one JSON document
    ``{"tasks": [...]}`` of :func:`why_json` forms instead.
    """
    if as_json:
        results = [why_json(why(context, root_name(context.task.path))) for context in contexts]
        print(json.dumps({"tasks": results}, indent=2), file=stream)
        return
    if not contexts:
        print("no pending tasks: every selected task is up to date", file=stream)
    for context in contexts:
        name = root_name(context.task.path)
        print(f"{name}:", file=stream)
        for line in format_why(why(context, name), list(context.task.input_ids)):
            print(f"  {line}", file=stream)
