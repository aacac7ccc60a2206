"""The plan of a batch: every stage execution its selected tasks need, each counted once.

An execution is identified before its input values exist. When the digests of every field it
reads are known (the producers are recorded in the store), its identity is its real store key;
otherwise the digest of a field still to be computed is replaced by its producer's identity and
the field's name (see :func:`planned_digest`), and the identity is the key of that document
(:func:`repype.store.keys.stage_key`). Two tasks that need the same identity need one
execution: for deterministic stages, the one that runs first records exactly the key the other
then finds. The plan walks the selected tasks in the order a sequential batch runs them and
follows the runner's rules (disabled stages are skipped; a stage that must run reads values
whose producer is marginal, i.e. not stored, by running that producer again), so the count it
announces is the count that runs. Early cutoff (a re-run stage producing outputs identical to
recorded ones) can only make fewer executions run than planned.

This module knows the runner and the store, not the task directories' files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from repype.config import Config
from repype.pipeline import Pipeline
from repype.runner import InputRun, InputRunner, Outcome, ValueRef
from repype.stage import Stage
from repype.store import IntegrityError, Store, StoreMissingError, codecs
from repype.typing import InputID

PLAN_SCHEMA_VERSION = 1
"""Version of the document :meth:`Plan.to_json` returns (README, "The dry run", documents it)."""

PLANNED = "planned:"
"""Prefix of the digest of a field whose value does not exist yet (never a content digest)."""


def planned_digest(identity: str, name: str) -> str:
    """Stands for the content digest of field `name` of the execution `identity`, before it runs."""
    return f"{PLANNED}{identity}:{name}"


def is_planned(ref: ValueRef) -> bool:
    """Whether `ref` stands for a value still to be computed (see :func:`planned_digest`)."""
    return str(ref["digest"]).startswith(PLANNED)


class _NoStore:
    """Stands in for a store that does not exist yet: values are described, nothing is recorded."""

    def describe(self, value: Any, field: str = "") -> ValueRef:
        return codecs.encode(value, field).ref

    def get_records(self, keys: Iterable[str], report_damage: bool = True) -> dict:
        return {}


@dataclass
class PlanContext:
    """A task with the pipeline and hyperparameters to plan and run it with.

    :class:`repype.batch.RunContext` has the same attributes; `pending` is why the task needs
    to run (see :meth:`repype.task.Task.is_pending`).
    """

    task: Any
    pipeline: Pipeline
    config: Config
    pending: str = ""


# --- what the manifests of a store say --------------------------------------------------------


@dataclass
class ManifestIndex:
    """What the task manifests in one store say: who references which record, and run times.

    `records` maps a record key to the names (refs) of the tasks whose manifest references it;
    `times` maps a stage sha to the run times recorded for it (seconds, in any task).
    """

    records: dict[str, set[str]] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def of(cls, store: Store | None) -> ManifestIndex:
        """The index of every manifest in `store` (empty for None)."""
        index = cls()
        if store is None:
            return index
        for name in store.list_refs(strict=False):
            try:
                header = store.get_manifest(name)
                entries = store.manifest_inputs(header).values() if header is not None else ()
            except IntegrityError:  # a damaged task supplies nothing here; `repype store ls` reports it
                continue
            for entry in entries:
                for key in entry.records:
                    index.records.setdefault(key, set()).add(name)
                for stage_id, seconds in entry.times.items():
                    if stage_id in header.stages and seconds > 0:  # a disabled stage takes 0 s: not a run time
                        index.times.setdefault(header.stages[stage_id], []).append(float(seconds))
        return index

    def estimate(self, stage_sha: str) -> float | None:
        """The mean recorded run time of the stage with `stage_sha`, or None when none is recorded."""
        times = self.times.get(stage_sha)
        return sum(times) / len(times) if times else None

    def suppliers(self, keys: Iterable[str]) -> Counter:
        """How many of `keys` each task supplies: the task whose manifest references a record.

        A record referenced by several manifests counts for the one referencing most of `keys`
        (then the first by name); records no manifest references count under None.
        """
        keys = list(keys)
        coverage = Counter(name for key in keys for name in self.records.get(key, ()))
        counts: Counter = Counter()
        for key in keys:
            names = self.records.get(key)
            counts[min(names, key=lambda name: (-coverage[name], name)) if names else None] += 1
        return counts


def supplying_task(store: Store, keys: Sequence[str]) -> str | None:
    """The name of the task that supplies most of the recorded executions `keys`, or None."""
    if not keys:
        return None
    return top_supplier(ManifestIndex.of(store).suppliers(keys))


def top_supplier(suppliers: Counter) -> str | None:
    """The task supplying the most executions in `suppliers` (see :meth:`ManifestIndex.suppliers`;
    ties go to the first by name), or None when no task supplies any."""
    named = [(count, name) for name, count in suppliers.items() if name is not None]
    return min(named, key=lambda item: (-item[0], item[1]))[1] if named else None


# --- the plan ---------------------------------------------------------------------------------


@dataclass
class Execution:
    """One distinct stage execution of the batch.

    `identity` is its store key, or its planned identity when some input is not computed yet;
    `recorded` tells whether the store holds it already; `task` is the task that runs it (the
    first to need it) or, when recorded, the first that reuses it; `tasks` every task that needs it.
    """

    identity: str
    stage: str
    task: str
    input_id: InputID
    recorded: bool
    outputs: dict[str, ValueRef]
    seconds: float | None
    tasks: list[str] = field(default_factory=list)


@dataclass
class TaskPlan:
    """What one task of the batch needs, execution by execution (one per enabled stage and input).

    `reused` executions are recorded in the store already (`reused_from` names the supplying
    tasks, None for records no manifest references); `run` ones this task runs itself (`shared`
    of them are needed by later tasks too); `from_batch` ones an earlier task of this batch runs,
    by that task; `recomputations` counts, by stage id, runs of stages whose recorded outputs are
    needed again but were not stored (marginal stages). `estimated_seconds` sums recorded run
    times of the same stages for what this task runs; `unestimated` counts its runs without one;
    `reused_keys` are the keys of the reused records; `steps` lists, per input id, the identities
    of the executions of its enabled stages in pipeline order.
    """

    task: str
    pending: str
    store: str
    inputs: int
    stages: int
    disabled: int = 0
    reused: int = 0
    reused_from: Counter = field(default_factory=Counter)
    run: int = 0
    shared: int = 0
    from_batch: Counter = field(default_factory=Counter)
    recomputations: Counter = field(default_factory=Counter)
    estimated_seconds: float = 0.0
    unestimated: int = 0
    reused_keys: list[str] = field(default_factory=list)
    steps: dict[InputID, list[str]] = field(default_factory=dict)

    @property
    def recomputed(self) -> int:
        """Runs of stages whose recorded outputs this task needs again but were not stored."""
        return sum(self.recomputations.values())

    @property
    def to_run(self) -> int:
        """Stage executions this task runs: its own distinct ones and recomputations."""
        return self.run + self.recomputed

    def estimate(self, seconds: float | None) -> None:
        """Adds one run of `seconds` (None: no recorded time) to the estimate."""
        if seconds is None:
            self.unestimated += 1
        else:
            self.estimated_seconds += seconds

    def summary(self) -> str:
        """One line: what the task reuses, runs, shares, and gets from earlier tasks of the batch."""
        slots = self.inputs * self.stages
        parts = [f"{self.run} to run" + (f" ({self.shared} also for later tasks)" if self.shared else "")]
        if self.recomputed:
            parts.append(f"{self.recomputed} recomputed (not stored)")
        if self.reused:
            parts.append(f"{self.reused} reused from the store ({_by_task(self.reused_from)})")
        if self.from_batch:
            parts.append(f"{sum(self.from_batch.values())} run earlier in this batch by {_by_task(self.from_batch)}")
        if self.disabled:
            parts.append(f"{self.disabled} disabled")
        return f"{slots} stage executions: " + ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """This task's entry of the plan document (see README, "The dry run")."""
        return {
            "task": self.task,
            "pending": self.pending,
            "store": self.store,
            "inputs": self.inputs,
            "stages": self.stages,
            "run": self.run,
            "shared": self.shared,
            "recomputed": self.recomputed,
            "reused": self.reused,
            "reused_from": _task_counts(self.reused_from),
            "from_batch": _task_counts(self.from_batch),
            "disabled": self.disabled,
            "estimated_seconds": round(float(self.estimated_seconds), 3),
            "unestimated": self.unestimated,
        }


def _by_task(counts: Counter) -> str:
    return ", ".join(f"{name if name is not None else 'no task'}: {count}" for name, count in _ordered(counts))


def _task_counts(counts: Counter) -> list[dict[str, Any]]:
    return [{"task": name, "executions": count} for name, count in _ordered(counts)]


def _ordered(counts: Counter) -> list[tuple[str | None, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0] is None, item[0] or ""))


@dataclass
class Plan:
    """The deduplicated stage executions of a batch, and what each task needs of them.

    `executions` holds every distinct execution by (store URL, identity); `tasks` the plans of
    the tasks in the order they run; `up_to_date` how many selected tasks need not run.
    """

    tasks: list[TaskPlan]
    executions: dict[tuple[str, str], Execution]
    up_to_date: int = 0

    @property
    def run(self) -> int:
        """Distinct stage executions to run."""
        return sum(1 for execution in self.executions.values() if not execution.recorded)

    @property
    def recomputed(self) -> int:
        """Runs of stages whose recorded outputs are needed again but were not stored (marginal)."""
        return sum(task.recomputed for task in self.tasks)

    @property
    def to_run(self) -> int:
        """Every stage execution that runs: the distinct ones and the recomputations."""
        return self.run + self.recomputed

    @property
    def reused(self) -> int:
        """Distinct stage executions reused from the store."""
        return sum(1 for execution in self.executions.values() if execution.recorded)

    @property
    def shared(self) -> int:
        """Distinct stage executions to run that several tasks need (run once for all of them)."""
        return sum(1 for ex in self.executions.values() if not ex.recorded and len(set(ex.tasks)) > 1)

    def runs_by_stage(self) -> Counter:
        """Stage executions to run by stage id (recomputations included)."""
        runs = Counter(execution.stage for execution in self.executions.values() if not execution.recorded)
        for task in self.tasks:
            runs.update(task.recomputations)
        return runs

    @property
    def estimated_seconds(self) -> float:
        """Recorded run times of the same stages, summed over what runs (where known)."""
        return sum(task.estimated_seconds for task in self.tasks)

    @property
    def unestimated(self) -> int:
        """Stage executions to run without a recorded run time of their stage."""
        return sum(task.unestimated for task in self.tasks)

    def totals(self) -> list[str]:
        """The batch-wide lines of the dry run."""
        estimate = f"estimated {self.estimated_seconds:.1f} s of compute from recorded run times"
        if self.unestimated and self.unestimated == self.to_run:
            estimate = "compute time unknown: no run times of these stages are recorded yet"
        elif self.unestimated:
            estimate += f" ({self.unestimated} execution(s) without one)"
        return [
            f"{self.to_run} stage executions to run"
            + (f" (including {self.recomputed} recomputations of values not stored)" if self.recomputed else "")
            + f", {self.reused} reused from the store, {self.shared} shared between tasks (run once for several)",
            estimate,
            "(exact for deterministic stages; fewer run when a stage's outputs turn out identical to recorded "
            "ones, so that the stages after it are reused: early cutoff)",
        ]

    def to_json(self) -> dict[str, Any]:
        """The plan as one JSON document (schema in README, "The dry run")."""
        return {
            "schema": PLAN_SCHEMA_VERSION,
            "tasks": [task.to_json() for task in self.tasks],
            "totals": {
                "tasks": len(self.tasks),
                "up_to_date": self.up_to_date,
                "to_run": self.to_run,
                "run": self.run,
                "recomputed": self.recomputed,
                "reused": self.reused,
                "shared": self.shared,
                "by_stage": dict(sorted(self.runs_by_stage().items())),
                "estimated_seconds": round(float(self.estimated_seconds), 3),
                "unestimated": self.unestimated,
            },
        }


@dataclass
class _InputState:
    """The planner's view of one input of one task: which values are in memory, who made them."""

    run: InputRun
    memory: set[str] = field(default_factory=lambda: {"input_id"})


class Planner:
    """Builds a :class:`Plan` over run contexts, one task after the other (see the module docstring).

    With `parallel`, the plan is that of a parallel batch (:mod:`repype.graph`): each stage
    execution runs on its own, so values an input has in memory are only those of its stage's
    producers that run in this batch (the batch holds them) and those it recomputes itself; the
    manifests are written from stored values only. Without `pickup`, nothing is reused.
    """

    def __init__(self, parallel: bool = False, pickup: bool = True) -> None:
        self.parallel = parallel
        self.pickup = pickup
        self.executions: dict[tuple[str, str], Execution] = {}
        self.tasks: list[TaskPlan] = []
        self._indexes: dict[str, ManifestIndex] = {}
        self._shas: dict[int, str] = {}

    def add(self, context: PlanContext) -> TaskPlan:
        """Plans `context` after the contexts added before it (they run first)."""
        task, pipeline, url = context.task, context.pipeline, context.task.store_url
        try:
            store: Any = task.open_store(mode="r")
        except StoreMissingError:
            store = None
        if url not in self._indexes:
            self._indexes[url] = ManifestIndex.of(store)
        runner = InputRunner(
            store or _NoStore(), pipeline, task.get_marginal_fields(pipeline), str(task.path), quiet=True
        )
        plan = TaskPlan(task.ref_name, context.pending, url, len(task.input_ids), len(pipeline.stages))
        walk = _TaskWalk(self, plan, runner, self._indexes[url])
        walk.walk([_InputState(runner.start(input_id, context.config)) for input_id in task.input_ids])
        plan.reused_from = walk.index.suppliers(plan.reused_keys)
        self.tasks.append(plan)
        return plan

    def plan(self, up_to_date: int = 0) -> Plan:
        """The plan of the contexts added so far."""
        shared = Counter(ex.task for ex in self.executions.values() if not ex.recorded and len(set(ex.tasks)) > 1)
        for task in self.tasks:
            task.shared = shared[task.task]
        return Plan(list(self.tasks), dict(self.executions), up_to_date)

    def stage_sha(self, stage: Stage) -> str:
        """`stage.sha`, computed once per stage object (it walks the stage's code)."""
        if id(stage) not in self._shas:
            self._shas[id(stage)] = stage.sha
        return self._shas[id(stage)]


@dataclass
class _TaskWalk:
    """Walks the stages of one task's inputs as the runner would, adding to the planner's executions."""

    planner: Planner
    plan: TaskPlan
    runner: InputRunner
    index: ManifestIndex

    def walk(self, states: list[_InputState]) -> None:
        """Every stage for every input (store lookups batched per stage), then what the manifest needs."""
        runner, url = self.runner, self.plan.store
        for stage in runner.pipeline.stages:
            active = [state for state in states if runner.is_enabled(state.run, stage)]
            self.plan.disabled += len(states) - len(active)
            identities = [runner.key(state.run, stage) for state in active]
            lookups = [
                identity
                for state, identity in zip(active, identities, strict=True)
                if (url, identity) not in self.planner.executions
                and not any(is_planned(state.run.refs[name]) for name in stage.inputs)
            ]
            if not self.planner.pickup:
                lookups = []
            records = runner.store.get_records(lookups, report_damage=False) if lookups else {}  # the run reports
            for state, identity in zip(active, identities, strict=True):
                self.plan.steps.setdefault(state.run.input_id, []).append(identity)
                self.resolve(state, stage, identity, records.get(identity))
        keep = frozenset(runner.pipeline.persistent_fields) - runner.marginal_fields
        for state in states:  # the manifest needs every kept value stored
            if self.planner.parallel:  # written by the coordinator, which holds no values
                state.memory = {"input_id"}
            for name in state.run.persistent_refs:
                if name in keep:
                    self.materialize(state, name)

    def resolve(self, state: _InputState, stage: Stage, identity: str, record: Any) -> None:
        """`stage` on the input of `state`: reused from the store or the batch, or run here."""
        plan, run = self.plan, state.run
        execution = self.planner.executions.get((plan.store, identity))
        runs_here = execution is None and record is None
        if execution is None:
            if record is not None:
                outputs, seconds = dict(record.outputs), record.run_time
            else:
                marginal = self.runner.marginal_fields
                outputs = {
                    name: {"digest": planned_digest(identity, name), "stored": name not in marginal}
                    for name in stage.outputs
                }
                seconds = self.index.estimate(self.planner.stage_sha(stage))
            execution = Execution(identity, stage.id, plan.task, run.input_id, record is not None, outputs, seconds)
            self.planner.executions[(plan.store, identity)] = execution
        execution.tasks.append(plan.task)
        if runs_here:
            plan.run += 1
            plan.estimate(execution.seconds)
            if self.planner.parallel:  # an execution of its own: it has what the batch holds, nothing else
                state.memory = {"input_id", *(name for name in stage.inputs if is_planned(run.refs[name]))}
            self.run(state, stage)
        else:
            if execution.recorded:
                plan.reused += 1
                plan.reused_keys.append(identity)
            else:
                plan.from_batch[execution.task] += 1
            state.memory.difference_update(stage.outputs)
        for name in stage.outputs:
            run.refs[name] = execution.outputs[name]
            run.producers[name] = stage
        run.consumed.update(stage.consumes)

    def run(self, state: _InputState, stage: Stage) -> None:
        """`stage` runs on the input of `state`: it reads its inputs, which may need recomputing."""
        for name in sorted(stage.inputs):
            self.materialize(state, name)
        state.memory.update(stage.outputs)
        state.memory.difference_update(stage.consumes)

    def materialize(self, state: _InputState, name: str) -> None:
        """The value of `name` is needed: loaded when stored, else its producer runs again."""
        if name in state.memory or state.run.refs[name].get("stored", False):
            state.memory.add(name)
            return
        stage = state.run.producers[name]
        self.plan.recomputations[stage.id] += 1
        self.plan.estimate(self.index.estimate(self.planner.stage_sha(stage)))
        self.run(state, stage)


@dataclass
class Recorded:
    """What a plan found recorded for one task: each input's leading stage executions, and their supplier.

    `outcomes` maps an input id to the outcomes of its first enabled stages, up to the first one
    not recorded; `supplier` names the task whose manifest references most of them (or None).
    A run adopts them without asking the store again (see :meth:`repype.task.Task.run`).
    """

    outcomes: dict[InputID, list[Outcome]]
    supplier: str | None


def check_plan_matches(plan: Plan, contexts: Sequence[PlanContext]) -> None:
    """Raises `ValueError` unless `plan` is a plan of `contexts`, task by task, in their order."""
    planned = [(task.task, task.store) for task in plan.tasks]
    given = [(context.task.ref_name, context.task.store_url) for context in contexts]
    if planned != given:
        raise ValueError(
            f"the plan is for the tasks {[name for name, _ in planned]}, not {[name for name, _ in given]}"
        )


def recorded_of(plan: Plan, index: int) -> Recorded:
    """What `plan` found recorded for its task number `index`."""
    task = plan.tasks[index]
    outcomes: dict[InputID, list[Outcome]] = {}
    for input_id, identities in task.steps.items():
        leading = outcomes.setdefault(input_id, [])
        for identity in identities:
            execution = plan.executions[(task.store, identity)]
            if not execution.recorded:
                break
            leading.append(Outcome(execution.stage, identity, dict(execution.outputs), execution.seconds or 0.0))
    return Recorded(outcomes, top_supplier(task.reused_from))


def plan_batch(
    contexts: Sequence[PlanContext], up_to_date: int = 0, parallel: bool = False, pickup: bool = True
) -> Plan:
    """The plan of running `contexts` in this order (a batch runs them in path order).

    `parallel` plans a parallel batch, `pickup=False` a run that reuses nothing (see :class:`Planner`).
    """
    planner = Planner(parallel, pickup)
    for context in contexts:
        planner.add(context)
    return planner.plan(up_to_date)
