"""Store-driven execution of a pipeline on the inputs of one task.

Every stage execution is keyed by the stage's implementation hash, its hyperparameters as
adopted for the input, extra key material the stage declares, and the content digests of the
fields it reads (see :func:`repype.store.keys.stage_key`). A key recorded in the store is reused
without running the stage, and without loading its outputs unless a stage that must run reads
them. Outputs of stages that run are written to the store as soon as the stage finishes, so an
interrupted run resumes where it stopped.

This module knows the store and the pipeline, but nothing of task directories.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import repype.status
import repype.store
from repype.config import Config, TrackedConfig
from repype.pipeline import Pipeline, StageError, run_stage
from repype.stage import Stage, signature_sha
from repype.store import IntegrityError, SerializationError, Store
from repype.store.keys import document_key, key_document
from repype.store.manifests import Record
from repype.store.writes import WriteBatch
from repype.typing import InputID

ValueRef = dict[str, Any]

CLAIM_POLL = (0.05, 1.0)
"""Seconds between checks for the record of an execution another process claimed: first, at most
(the wait grows by half each time)."""


_OPEN_STORES: dict[str, Store] = {}


def open_shared_store(url: str, storage_options: dict | None = None, mode: str = "a") -> Store:
    """The store at `url`, opened once per process (tasks and workers of one process share it)."""
    cache_key = json.dumps([url, storage_options, mode], sort_keys=True, default=str)
    if cache_key not in _OPEN_STORES:
        _OPEN_STORES[cache_key] = repype.store.open(url, storage_options=storage_options, mode=mode)
    return _OPEN_STORES[cache_key]


class ReuseWarning(UserWarning):
    """A stored value could not be reused and was recomputed (damaged value, changed result)."""


@dataclass
class InputRun:
    """The state of one input while its stages are resolved from the store or run.

    `refs` maps every field known so far to its value reference (digest and storage info);
    `values` holds the values that are in memory. A field can be known by digest only, which
    is what keys need; its value is loaded or recomputed only when a stage that runs reads it.
    """

    input_id: InputID
    config: Config
    refs: dict[str, ValueRef] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    producers: dict[str, Stage] = field(default_factory=dict)
    consumed: set[str] = field(default_factory=set)
    record_keys: list[str] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    reads: dict[str, set[str]] = field(default_factory=dict)
    """Hyperparameter keys each stage that ran read (see :class:`repype.config.TrackedConfig`)."""
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The key document of each key computed for this input, by key (records keep it)."""
    next_stage: int = 0
    known_missing: str | None = None
    """The key of the next stage when :meth:`InputRunner.advance_recorded` just found no record of it."""

    @property
    def persistent_refs(self) -> dict[str, ValueRef]:
        """References of the fields that remain in the pipeline data (consumed ones are gone)."""
        return {name: ref for name, ref in self.refs.items() if name not in self.consumed}

    def adopt(self, stage: Stage, outcome: Outcome) -> None:
        """Takes the fields of the resolved execution `outcome` of `stage` (values only those it holds)."""
        for name in stage.outputs:
            self.refs[name] = outcome.outputs[name]
            self.producers[name] = stage
            self.values.pop(name, None)
        self.values.update(outcome.held)
        self.consumed.update(stage.consumes)
        self.record_keys.append(outcome.key)
        self.times[stage.id] = outcome.seconds


@dataclass
class Outcome:
    """How one stage execution was resolved: its record key, output references and run time.

    `executed` tells whether the stage ran (else its record was reused); `reads` are the
    hyperparameter keys it read when it ran; `held` carries output values in memory, for
    executions that read them next without a trip through the store.
    """

    stage: str
    key: str
    outputs: dict[str, ValueRef]
    seconds: float
    executed: bool = False
    reads: frozenset[str] = frozenset()
    held: dict[str, Any] = field(default_factory=dict)

    def without_values(self) -> Outcome:
        """The same outcome holding no values (what the coordinator of a batch keeps)."""
        return replace(self, held={})


class InputRunner:
    """Runs the stages of `pipeline` for inputs of one task against `store`.

    Args:
        store: The store that holds values and stage records.
        pipeline: The pipeline to run.
        marginal_fields: Fields whose values are never written to the store (their digests are).
        context: A label for error messages, usually the task path.
        status: Status object for progress events.
        quiet: Fire no `skip` callbacks for reused or disabled stages and report no damaged
            records (for planning only: the run reports them).
    """

    def __init__(
        self,
        store: Store,
        pipeline: Pipeline,
        marginal_fields: Collection[str] = (),
        context: str = "",
        status: Any = None,
        quiet: bool = False,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.marginal_fields = frozenset(marginal_fields)
        self.context = context
        self.status = status
        self.quiet = quiet
        self._fingerprints: dict[str, tuple[str, dict[str, str]]] = {}

    # --- set-up and lookups -------------------------------------------------------------------

    def start(self, input_id: InputID, config: Config) -> InputRun:
        """Begin an input: `config` must be the task's hyperparameters before adoption."""
        adopted = self.pipeline.configure(config, input_id)
        run = InputRun(input_id=input_id, config=adopted)
        run.values["input_id"] = input_id
        run.refs["input_id"] = self.store.describe(input_id, field="input_id")
        return run

    def stage_config(self, run: InputRun, stage: Stage) -> Config:
        """The hyperparameters of `stage` for the input of `run`."""
        return run.config.get(stage.id, {})

    def is_enabled(self, run: InputRun, stage: Stage) -> bool:
        """Whether `stage` runs for the input of `run` (the `enabled` hyperparameter)."""
        return stage.is_enabled(self.stage_config(run, stage))

    def key(self, run: InputRun, stage: Stage) -> str:
        """The key of the execution of `stage` on the input of `run` (its document is kept in `run.documents`)."""
        missing = sorted(name for name in stage.inputs if name not in run.refs)
        if missing:
            raise StageError(stage, input_id=run.input_id) from KeyError(
                f"{self._where(run)}: stage '{stage.id}' reads {missing}, which no earlier enabled stage produced"
            )
        stage_config = self.stage_config(run, stage)
        digests = {name: run.refs[name]["digest"] for name in sorted(stage.inputs)}
        extra = stage.key_material(self.pipeline, run.input_id, stage_config)
        sha, distributions = self._fingerprint(stage)
        document = key_document(sha, stage_config.entries, digests, extra=extra, distributions=distributions)
        key = document_key(document)
        run.documents[key] = document
        return key

    def _fingerprint(self, stage: Stage) -> tuple[str, dict[str, str]]:
        """`Stage.sha` and the distributions it reaches, once per stage and runner (it walks the reached code)."""
        if stage.id not in self._fingerprints:
            signature = stage.signature
            self._fingerprints[stage.id] = (signature_sha(signature), signature["distributions"])
        return self._fingerprints[stage.id]

    def advance_recorded(self, runs: Iterable[InputRun]) -> None:
        """Adopt recorded stage executions for every run, as far as the store has them.

        Lookups are batched across inputs, one store query per stage.
        """
        pending = list(runs)
        while pending:
            keyed: dict[str, InputRun] = {}
            for run in pending:
                self._skip_disabled(run)
                if run.next_stage < len(self.pipeline.stages):
                    keyed[self.key(run, self.pipeline.stages[run.next_stage])] = run
            records = self.store.get_records(list(keyed), report_damage=not self.quiet) if keyed else {}
            pending = []
            for key, run in keyed.items():
                if key in records:
                    self._adopt(run, self.pipeline.stages[run.next_stage], key, records[key])
                    pending.append(run)
                else:
                    run.known_missing = key

    # --- execution ----------------------------------------------------------------------------

    def finish(self, run: InputRun, pickup: bool = True) -> InputRun:
        """Run or reuse every remaining stage of `run`, writing records as stages finish."""
        stages = self.pipeline.stages
        while True:
            self._skip_disabled(run)
            if run.next_stage >= len(stages):
                return run
            self.resolve_stage(run, pickup)

    def resolve_stage(self, run: InputRun, pickup: bool = True, hold: Collection[str] = ()) -> Outcome:
        """Reuse the recorded execution of the next stage of `run`, or run it and record it.

        The next stage must be enabled. With `pickup`, a missing execution runs under a claim in
        the store: when another process is running it, this waits for its record and reuses it
        (see :meth:`_execute_claimed`). The outcome holds the values of the outputs named in
        `hold` when the stage ran (see :class:`Outcome`).
        """
        stage = self.pipeline.stages[run.next_stage]
        key = self.key(run, stage)
        if not pickup:
            record = None
        elif key == run.known_missing:  # the batched lookup found none: only this run may have written it since
            record = self.store.known_record(key)
        else:
            record = self.store.get_record(key)
        if record is None and pickup:  # a forced run (no pickup) executes whatever others run or recorded
            record = self._execute_claimed(run, stage, key)
        elif record is None:
            self._execute(run, stage, key)
        if record is not None:
            self._adopt(run, stage, key, record)
            return Outcome(stage.id, key, {name: run.refs[name] for name in stage.outputs}, record.run_time)
        return Outcome(
            stage.id,
            key,
            {name: run.refs[name] for name in stage.outputs},
            run.times[stage.id],
            executed=True,
            reads=frozenset(run.reads.get(stage.id, ())),
            held={name: run.values[name] for name in hold if name in run.values},
        )

    def apply(self, run: InputRun, outcome: Outcome, ran_here: bool) -> None:
        """Brings `run` past the execution `outcome` of its next enabled stage, resolved elsewhere.

        `ran_here` counts it as run for this input (else as reused, firing the `skip` callbacks).
        """
        self._skip_disabled(run)
        stage = self.pipeline.stages[run.next_stage]
        if stage.id != outcome.stage:
            raise ValueError(f"{self._where(run)}: expected an outcome of stage '{stage.id}', got '{outcome.stage}'")
        self._check_outputs(run, stage, outcome.key, outcome.outputs)
        run.adopt(stage, outcome.without_values())
        run.next_stage += 1
        if ran_here:
            run.executed.append(stage.id)
            run.reads[stage.id] = set(outcome.reads)
        else:
            run.reused.append(stage.id)
            self._skip(run, stage)

    def complete(self, run: InputRun) -> InputRun:
        """Skips the disabled stages left at the end of `run` (after :meth:`apply` of every enabled one)."""
        self._skip_disabled(run)
        return run

    def materialize(self, run: InputRun, names: Iterable[str]) -> dict[str, Any]:
        """Values of the fields `names`, loaded from the store or recomputed when not stored."""
        for name in names:
            self._materialize(run, name)
        return {name: run.values[name] for name in names}

    def store_values(self, run: InputRun, names: Iterable[str]) -> dict[str, ValueRef]:
        """References of `names` whose values are in the store, writing those that are not yet."""
        refs = {}
        for name in names:
            if not run.refs[name].get("stored", False):
                run.refs[name] = self._put(run, name, self._materialize(run, name))
            refs[name] = run.refs[name]
        return refs

    # --- internals ----------------------------------------------------------------------------

    def _where(self, run: InputRun) -> str:
        prefix = f"task {self.context}: " if self.context else ""
        return f"{prefix}input {run.input_id!r}"

    def _skip_disabled(self, run: InputRun) -> None:
        stages = self.pipeline.stages
        while run.next_stage < len(stages) and not self.is_enabled(run, stages[run.next_stage]):
            stage = stages[run.next_stage]
            self._skip(run, stage)
            run.times[stage.id] = 0.0
            run.next_stage += 1

    def _check_outputs(self, run: InputRun, stage: Stage, key: str, outputs: Mapping[str, ValueRef]) -> None:
        missing = sorted(set(stage.outputs) - set(outputs))
        if missing:
            raise IntegrityError(
                f"{self._where(run)}: stage record {key} of stage '{stage.id}' lacks outputs {missing}"
            )

    def _adopt(self, run: InputRun, stage: Stage, key: str, record: Any) -> None:
        self._check_outputs(run, stage, key, record.outputs)
        run.adopt(stage, Outcome(stage.id, key, dict(record.outputs), record.run_time))
        run.reused.append(stage.id)
        run.next_stage += 1
        self._skip(run, stage)
        if record.document is None and not self.quiet and key in run.documents:  # written before format 2
            self.store.put_record(key, record.outputs, record.run_time, stage.id, run.documents[key])

    def _skip(self, run: InputRun, stage: Stage) -> None:
        if not self.quiet:
            stage.skip(self.pipeline, run.input_id, run.values, self.stage_config(run, stage), self.status)

    def _execute(self, run: InputRun, stage: Stage, key: str) -> None:
        self._run_stage(run, stage)
        self.record(run, stage, key, run.times[stage.id])
        run.executed.append(stage.id)
        run.next_stage += 1

    def _execute_claimed(self, run: InputRun, stage: Stage, key: str) -> Record | None:
        """Execute `stage` (whose record under `key` was missing) under a claim, unless another process runs it.

        Holding the claim, the record is looked up once more (its holder may have finished just
        before), then the stage runs and is recorded, and the claim is released (also when the
        stage fails). While another live process holds it, an intermediate status line says so
        and the record is polled (backing off, see :data:`CLAIM_POLL`) until it appears or the
        claim is released or dies (then this claims it again). Returns the record that another
        process wrote (for the caller to adopt: nothing ran here), or None when the stage ran
        here. Stores where claims do not work run the stage unclaimed.
        """
        while True:
            with self.store.claim(key) as claim:
                if claim is None or claim.held:
                    record = None if claim is None else self.store.get_record(key)
                    if record is None:
                        self._execute(run, stage, key)
                    return record
            repype.status.update(
                self.status,
                f"waiting for {stage.id} on input {run.input_id!r}, claimed by {claim.holder}",
                info="waiting",
                stage=stage.id,
                input_id=run.input_id,
                holder=claim.holder,
                intermediate=True,
            )
            delay, longest = CLAIM_POLL
            while claim is not None:
                time.sleep(delay)
                delay = min(delay * 1.5, longest)
                record = self.store.get_record(key)
                if record is not None:
                    return record
                claim = self.store.live_claim(key)

    def record(self, run: InputRun, stage: Stage, key: str, seconds: float) -> None:
        """Write the outputs of `stage` (values in `run.values`), then its record under `key`.

        Values and record go to the store in one batch (one call into its event loop; values too
        large for a batch are written before it). Marginal outputs are recorded by digest only;
        their values are never written.
        """
        batch = self.store.batch()
        outputs = {}
        for name in sorted(stage.outputs):
            value = run.values[name]
            if name in self.marginal_fields:
                outputs[name] = _digest_only(self.store.describe(value, field=name))
            else:
                outputs[name] = self._put(run, name, value, batch=batch)
            run.producers[name] = stage
        batch.put_record(key, outputs, seconds, stage=stage.id, document=run.documents.get(key))
        batch.commit()
        run.refs.update(outputs)
        run.record_keys.append(key)
        run.times[stage.id] = seconds

    def _run_stage(self, run: InputRun, stage: Stage) -> None:
        for name in stage.inputs:
            self._materialize(run, name)
        config = self.stage_config(run, stage)
        if isinstance(config, Config):
            config = TrackedConfig(config.entries)
            run.reads[stage.id] = config.reads
        run.times[stage.id] = run_stage(self.pipeline, stage, run.input_id, run.values, config, self.status)
        run.consumed.update(stage.consumes)

    def _put(
        self, run: InputRun, name: str, value: Any, rewrite: bool = False, batch: WriteBatch | None = None
    ) -> ValueRef:
        """Stores `value` of field `name` (in `batch` if given, written by its commit)."""
        target = self.store if batch is None else batch
        try:
            return target.put_value(value, field=name, rewrite=rewrite)
        except SerializationError as error:
            raise SerializationError(f"{self._where(run)}: cannot store field '{name}': {error}") from error

    def _materialize(self, run: InputRun, name: str) -> Any:
        if name in run.values:
            return run.values[name]
        ref = run.refs[name]
        if ref.get("stored", False):
            try:
                run.values[name] = self.store.get_value(ref, context=self._context(run, name))
                return run.values[name]
            except IntegrityError as error:
                warnings.warn(f"{error}; recomputing it", ReuseWarning, stacklevel=2)
        self._recompute(run, name)
        return run.values[name]

    def _recompute(self, run: InputRun, name: str) -> None:
        """Run the producer of `name` again (its value is not stored, or is damaged)."""
        stage = run.producers[name]
        expected = {out: run.refs[out] for out in stage.outputs}
        self._run_stage(run, stage)
        for out, old in expected.items():
            fresh = self.store.describe(run.values[out], field=out)
            if fresh["digest"] != old["digest"]:
                warnings.warn(
                    f"{self._where(run)}: stage '{stage.id}' recomputed field '{out}' with a different "
                    "result than recorded (is the stage deterministic?)",
                    ReuseWarning,
                    stacklevel=3,
                )
            if old.get("stored", False) and out not in self.marginal_fields:
                run.refs[out] = self._put(run, out, run.values[out], rewrite=True)

    def _context(self, run: InputRun, name: str) -> dict[str, Any]:
        return {"task": self.context, "input": run.input_id, "field": name}


def _digest_only(ref: ValueRef) -> ValueRef:
    """A marginal output's reference without a packed array in it: marginal values are never stored."""
    if "packed" not in ref:
        return ref
    return {**{key: value for key, value in ref.items() if key != "packed"}, "stored": False}


def progress_event(run: InputRun) -> Mapping[str, Any]:
    """Summary of how an input was resolved: stages reused from the store and stages run."""
    return {"reused": len(run.reused), "executed": len(run.executed), "reused_stages": list(run.reused)}
