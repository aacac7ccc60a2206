"""The determinism audit: re-run recorded stage executions and compare their output digests.

A sample of the stage executions recorded for the inputs of some tasks is run again, each on
its inputs loaded from the store, and the digests of the outputs are compared with the record.
A stage whose outputs differ breaks early cutoff and deduplication; its implementation is
marked in the store (:mod:`repype.store.marks`). Nothing else is written: values and records
stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from repype.runner import InputRun, InputRunner
from repype.stage import Stage
from repype.store import StoreMissingError, marks


@dataclass
class StageAudit:
    """What the audit found for one stage: executions re-run and matched, and the keys that differed.

    `skipped` counts executions whose inputs are not all in the store (outputs of marginal
    stages); `failed` those that raised an error when re-run.
    """

    stage: str
    rerun: int = 0
    matched: int = 0
    skipped: int = 0
    failed: int = 0
    differing: list[str] = field(default_factory=list)

    @property
    def deterministic(self) -> bool:
        """Whether every re-run reproduced the recorded outputs."""
        return not self.differing

    def __str__(self) -> str:
        text = f"stage '{self.stage}': {self.matched} of {self.rerun} re-run execution(s) matched"
        extra = [f"{count} {what}" for count, what in ((self.skipped, "skipped"), (self.failed, "failed")) if count]
        if extra:
            text += f" ({', '.join(extra)})"
        if self.differing:
            text += " - NOT DETERMINISTIC, marked in the store"
        return text


def sampled(key: str, fraction: float) -> bool:
    """Whether the execution `key` is in a sample of `fraction` (the same in every run: by its key)."""
    return int(key[:8], 16) < fraction * 0x1_0000_0000


def audit(contexts: Iterable[Any], fraction: float = 1.0) -> dict[str, StageAudit]:
    """Audits the recorded executions of the tasks of `contexts` (`repype.batch.RunContext`), by stage id.

    Each execution is re-run once, even when several tasks share it; executions the store does
    not hold are not audited (run the tasks first).
    """
    results: dict[str, StageAudit] = {}
    seen: set[str] = set()
    for context in contexts:
        task, pipeline = context.task, context.pipeline
        try:
            task.open_store(mode="r")
        except StoreMissingError:  # nothing recorded; opening it to write would create it
            continue
        store = task.open_store()
        runner = InputRunner(store, pipeline, task.get_marginal_fields(pipeline), str(task.path), quiet=True)
        runs = [runner.start(input_id, context.config) for input_id in task.input_ids]
        runner.advance_recorded(runs)
        for run in runs:
            for stage_id, key in zip(run.reused, run.record_keys):
                if key in seen or not sampled(key, fraction):
                    continue
                seen.add(key)
                stage = pipeline.stage(stage_id)
                _rerun(runner, run, stage, key, results.setdefault(stage_id, StageAudit(stage_id)))
    return results


def _rerun(runner: InputRunner, run: InputRun, stage: Stage, key: str, result: StageAudit) -> None:
    refs = {name: run.refs[name] for name in stage.inputs}
    if not all("value" in ref or ref.get("stored", False) for ref in refs.values()):
        result.skipped += 1
        return
    store = runner.store
    data = {name: store.get_value(ref) for name, ref in refs.items()}
    try:
        stage.run(runner.pipeline, run.input_id, data, runner.stage_config(run, stage).copy())
    except Exception:  # a stage that cannot run again says nothing about determinism
        result.failed += 1
        return
    result.rerun += 1
    recorded = store.get_record(key).outputs
    fresh = {name: store.describe(data[name], field=name)["digest"] for name in stage.outputs}
    differing = sorted(name for name in stage.outputs if fresh[name] != recorded[name]["digest"])
    if not differing:
        result.matched += 1
        return
    result.differing.append(key)
    before = {name: recorded[name]["digest"] for name in differing}
    marks.mark_nondeterministic(store, stage.id, stage.sha, key, before, {name: fresh[name] for name in differing})


def audit_command(contexts: Iterable[Any], fraction: float, stream: IO[str]) -> int:
    """`repype ROOT --check-determinism`: audits, prints a line per stage; 1 when a stage is not deterministic."""
    if not 0 < fraction <= 1:
        print(f"repype: --sample must be a fraction in (0, 1], not {fraction}", file=stream)
        return 1
    results = audit(contexts, fraction)
    for result in results.values():
        print(str(result), file=stream)
    if not results:
        print("no recorded stage executions to re-run (run the tasks first, or sample more)", file=stream)
    return 0 if all(result.deterministic for result in results.values()) else 1
