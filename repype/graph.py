"""A parallel batch: every distinct stage execution of the selected tasks, run once, across tasks.

The plan of the batch (:func:`repype.plan.plan_batch` with `parallel=True`) lists, for every
input of every task, the identities of the executions of its enabled stages. Executions the
store records are resolved from the plan; each other identity becomes one *unit* of work, run
by one worker of one executor for the whole batch, whichever tasks need it. A unit waits for the
units of the earlier stages of the input it is planned for (its owner), and it receives their
outcomes (:class:`repype.runner.Outcome`); a worker reuses the unit's record when an earlier
stage turned out byte-identical to a recorded one (early cutoff), else runs the stage and
writes values and record to the store. The store stays the source of truth; values travel
between units only where they are not stored (marginal stages) or where the executor holds
data (Dask, which passes results between its workers).

A task is committed (manifest, ref, digest files) by the coordinator as soon as its last
execution is resolved, so an interrupted batch keeps every completed task; a failing execution
fails the tasks that need it, and the other tasks still complete.

This module knows run contexts, the runner and the executor; it calls back into the task only
through :meth:`repype.task.Task.complete`.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import repype.status
from repype.executor import Executor
from repype.pipeline import failure_details
from repype.plan import Plan, PlanContext, TaskPlan, check_plan_matches, plan_batch, top_supplier
from repype.runner import InputRun, InputRunner, Outcome, progress_event
from repype.stage import Stage
from repype.work import ShippedPipeline, StageOrder, order_payload, run_order, without_values

POLL_SECONDS = 0.2
"""How often the coordinator looks up from waiting, to notice a stop request."""

Step = tuple[str, str]
"""An execution of the batch: (store URL, identity)."""


@dataclass(eq=False)
class _TaskRun:
    """A task of the batch while its executions resolve (`remaining`: inputs not resolved yet)."""

    context: PlanContext
    runner: InputRunner
    status: Any
    plan: TaskPlan
    store_url: str
    storage_options: dict | None
    inputs: list[_Input] = field(default_factory=list)
    remaining: int = 0
    error: BaseException | None = None
    started: bool = False
    completed: bool = False

    @property
    def name(self) -> str:
        return str(self.context.task.path)


@dataclass(eq=False)
class _Input:
    """One input of one task: its executions in order, and how far they are resolved."""

    task: _TaskRun
    run: InputRun
    steps: list[Step]
    position: int = 0
    resolved: bool = False


@dataclass(eq=False)
class _Unit:
    """One execution the batch runs: planned for `owner`, after the owner's `priors`.

    `users` are the inputs (of any task) that need it; `waiting` counts its priors not resolved
    yet, `unsubmitted` its dependents not submitted yet (until then, values it holds are kept).
    """

    step: Step
    stage: Stage
    owner: _Input
    priors: list[Step]
    hold: frozenset[str]
    users: list[_Input] = field(default_factory=list)
    dependents: list[_Unit] = field(default_factory=list)
    waiting: int = 0
    unsubmitted: int = 0
    handle: Any = None


@dataclass
class GraphResult:
    """What a parallel batch did: the tasks it completed (with their resolved inputs) and the failed ones."""

    completed: dict[str, tuple[InputRunner, list[InputRun]]] = field(default_factory=dict)
    failed: dict[str, BaseException] = field(default_factory=dict)
    interrupted: bool = False


class BatchGraph:
    """The units of a parallel batch of `contexts`, planned as `plan` (see the module docstring).

    Args:
        contexts: The run contexts, in the order of `plan.tasks`.
        plan: Their plan, made with `parallel=True`.
        status: The batch's status: each task reports into a node derived from it (into `status`
            itself without `derive_status`).
        pickup: Reuse recorded executions (else every execution runs).
    """

    def __init__(
        self,
        contexts: Sequence[PlanContext],
        plan: Plan,
        status: Any = None,
        pickup: bool = True,
        derive_status: bool = True,
    ) -> None:
        self.pickup = pickup
        self.derive_status = derive_status
        self.token = uuid.uuid4().hex[:8]  # keys of this batch differ from those of earlier ones on one cluster
        self.outcomes: dict[Step, Outcome] = {}
        self.units: dict[Step, _Unit] = {}
        self.tasks = [
            self._add_task(context, task_plan, status, plan)
            for context, task_plan in zip(contexts, plan.tasks, strict=True)
        ]
        self._pipelines: dict[int, ShippedPipeline] = {}

    # --- building ---------------------------------------------------------------------------

    def _add_task(self, context: PlanContext, task_plan: TaskPlan, status: Any, plan: Plan) -> _TaskRun:
        task, pipeline = context.task, context.pipeline
        task_status = repype.status.derive(status) if self.derive_status else status
        runner = InputRunner(
            task.open_store(), pipeline, task.get_marginal_fields(pipeline), str(task.path), task_status
        )
        options = task.full_spec.get("storage_options") or None
        task_run = _TaskRun(context, runner, task_status, task_plan, task.store_url, options)
        for input_id in task.input_ids:
            identities = task_plan.steps.get(input_id, [])
            steps = [(task_plan.store, identity) for identity in identities]
            item = _Input(task_run, runner.start(input_id, context.config), steps)
            task_run.inputs.append(item)
            task_run.remaining += 1
            for position, step in enumerate(steps):
                self._add_step(item, position, plan.executions[step])
        return task_run

    def _add_step(self, item: _Input, position: int, execution: Any) -> None:
        step = item.steps[position]
        if execution.recorded:
            self.outcomes[step] = Outcome(execution.stage, step[1], dict(execution.outputs), execution.seconds or 0.0)
            return
        unit = self.units.get(step)
        if unit is None:
            pipeline = item.task.runner.pipeline
            stage = pipeline.stage(execution.stage)
            later = set().union(*(s.inputs for s in pipeline.stages[pipeline.find(stage.id) + 1 :]))
            unit = _Unit(step, stage, item, item.steps[:position], frozenset(stage.outputs & later))
            for prior in unit.priors:
                if prior in self.units:
                    unit.waiting += 1
                    self.units[prior].dependents.append(unit)
                    self.units[prior].unsubmitted += 1
            self.units[step] = unit
        unit.users.append(item)

    # --- running ----------------------------------------------------------------------------

    def run(self, executor: Executor, stop: threading.Event | None = None) -> GraphResult:
        """Runs every unit on `executor` and commits each task as it completes.

        Returns early, with `interrupted`, when `stop` is set (pending work is cancelled).
        """
        stop = stop or threading.Event()
        result = GraphResult()
        for task_run in self.tasks:
            for item in task_run.inputs:
                self._advance(item, result)
            if not task_run.inputs:
                self._commit(task_run, result)
        if executor.holds_data:
            waiting = {self._submit(executor, unit, eager=True): unit for unit in self.units.values()}
        else:
            waiting = {self._submit(executor, unit): unit for unit in self.units.values() if unit.waiting == 0}
        while waiting:
            if stop.is_set():
                running = [unit.handle for unit in self.units.values() if unit.handle is not None]
                executor.cancel([*waiting, *running])
                result.interrupted = True
                return result
            for handle in executor.wait(list(waiting), POLL_SECONDS):
                unit = waiting.pop(handle)
                try:
                    outcome = executor.result(handle)
                except Exception as error:  # the stage failed, or its store: fail the tasks that need it
                    self._fail(unit, error, result)
                    continue
                self.outcomes[unit.step] = outcome
                for dependent in unit.dependents:
                    dependent.waiting -= 1
                    if dependent.waiting == 0 and not executor.holds_data:
                        waiting[self._submit(executor, dependent)] = dependent
                unit.handle = None
                for item in unit.users:
                    self._advance(item, result)
        return result

    def _submit(self, executor: Executor, unit: _Unit, eager: bool = False) -> Any:
        """Submits `unit` with its priors' outcomes (handles of unfinished ones when `eager`)."""
        owner = unit.owner
        task_run = owner.task
        context = task_run.context
        hold = unit.hold if executor.holds_data else unit.hold & task_run.runner.marginal_fields
        order = StageOrder(
            store_url=task_run.store_url,
            storage_options=task_run.storage_options,
            pipeline=self._shipped(task_run.runner),
            marginal_fields=task_run.runner.marginal_fields,
            context=task_run.name,
            input_id=owner.run.input_id,
            config=context.config,
            stage=unit.stage.id,
            hold=hold,
            pickup=self.pickup,
            status=repype.status.derive(task_run.status) if executor.local else None,
        )
        priors = [
            self.units[step].handle if step in self.units and eager else self.outcomes[step] for step in unit.priors
        ]
        for item in unit.users:
            self._start(item.task)
        key = f"{unit.stage.id}-{unit.step[1][:16]}-{self.token}"  # the Dask dashboard groups by stage id
        unit.handle = executor.submit(run_order, order_payload(order), *priors, key=key)
        self._release(unit)
        if eager:  # the coordinator fetches outcomes without their values; the values stay on the workers
            # first in line on the worker that just finished the unit: the coordinator learns of it at once
            return executor.submit(without_values, unit.handle, key=f"outcome-{key}", priority=1)
        return unit.handle

    def _shipped(self, runner: InputRunner) -> ShippedPipeline:
        if id(runner.pipeline) not in self._pipelines:
            self._pipelines[id(runner.pipeline)] = ShippedPipeline.of(runner.pipeline)
        return self._pipelines[id(runner.pipeline)]

    def _release(self, unit: _Unit) -> None:
        """Drops the values held by the priors of the just submitted `unit` once all their dependents are submitted."""
        for step in unit.priors:
            prior = self.units.get(step)
            if prior is None:
                continue
            prior.unsubmitted -= 1
            if prior.unsubmitted == 0 and step in self.outcomes:
                self.outcomes[step] = self.outcomes[step].without_values()

    def _fail(self, unit: _Unit, error: BaseException, result: GraphResult) -> None:
        """`unit` failed: so do the units after it and the tasks that need any of them."""
        failed = [unit]
        while failed:
            current = failed.pop()
            for item in current.users:
                self._fail_task(item.task, error, result)
            failed.extend(current.dependents)

    @staticmethod
    def _fail_task(task_run: _TaskRun, error: BaseException, result: GraphResult) -> None:
        if task_run.error is not None or task_run.completed:
            return
        task_run.error = error
        result.failed[task_run.name] = error
        task = str(task_run.context.task.path.resolve())
        repype.status.update(task_run.status, info="error", task=task, **failure_details(error))

    def _advance(self, item: _Input, result: GraphResult) -> None:
        """Applies the resolved executions of `item` in order; commits its task when every input is resolved."""
        task_run = item.task
        if task_run.error is not None or item.resolved:
            return
        while item.position < len(item.steps) and item.steps[item.position] in self.outcomes:
            step = item.steps[item.position]
            outcome = self.outcomes[step]
            unit = self.units.get(step)
            task_run.runner.apply(
                item.run, outcome, ran_here=unit is not None and unit.owner is item and outcome.executed
            )
            item.position += 1
        if item.position == len(item.steps):
            item.resolved = True
            task_run.remaining -= 1
            if task_run.remaining == 0:
                self._commit(task_run, result)

    def _start(self, task_run: _TaskRun) -> None:
        """Reports the `start` of the task: when its first execution is submitted, or it is committed."""
        if task_run.started:
            return
        task_run.started = True
        task = task_run.context.task
        supplier = top_supplier(task_run.plan.reused_from)
        repype.status.update(
            task_run.status,
            info="start",
            task=str(task.path.resolve()),
            pickup=str((task.root.path / supplier).resolve()) if supplier else None,
            store=task_run.runner.store.url,
            reused=task_run.plan.reused,
            stage_count=task_run.plan.inputs * task_run.plan.stages,
        )

    def _commit(self, task_run: _TaskRun, result: GraphResult) -> None:
        self._start(task_run)
        runner, context = task_run.runner, task_run.context
        runs = [runner.complete(item.run) for item in task_run.inputs]
        try:
            task = str(context.task.path.resolve())
            for run in runs:
                update = progress_event(run)
                repype.status.update(task_run.status, info="processed", task=task, input_id=run.input_id, **update)
            context.task.complete(runner, runs, context.config, task_run.status)
        except Exception as error:  # the store refused the manifest: this task fails, the others go on
            self._fail_task(task_run, error, result)
            return
        task_run.completed = True
        result.completed[task_run.name] = (runner, runs)


PROCESS_LOCAL_PROTOCOLS = ("memory://",)
"""Stores that live inside one process: workers of another process cannot reach them."""


def check_reachable(store_url: str, task: str) -> None:
    """Raises `ValueError` naming `task` when its store lives in this process only (workers would write elsewhere)."""
    if store_url.startswith(PROCESS_LOCAL_PROTOCOLS):
        raise ValueError(
            f"task {task}: the store {store_url} lives in this process only; workers of --jobs or --dask cannot "
            "reach it (use a directory or an object store)"
        )


def run_graph(
    contexts: Sequence[PlanContext],
    executor: Executor,
    status: Any = None,
    pickup: bool = True,
    plan: Plan | None = None,
    stop: threading.Event | None = None,
    per_task_status: bool = True,
) -> GraphResult:
    """Runs `contexts` as one parallel batch on `executor` (see the module docstring).

    `plan` must be their plan made with `parallel=True` (made here when not given). The stores
    of the tasks hold a writer lease while the batch runs. With `per_task_status` each task
    reports into a node derived from `status`, else into `status` itself.
    """
    if executor.remote:
        for context in contexts:
            check_reachable(context.task.store_url, str(context.task.path))
    if plan is None:
        plan = plan_batch(contexts, parallel=True, pickup=pickup)
    check_plan_matches(plan, contexts)
    graph = BatchGraph(contexts, plan, status, pickup, per_task_status)
    with contextlib.ExitStack() as stack:
        for store in {id(task.runner.store): task.runner.store for task in graph.tasks}.values():
            stack.enter_context(store.writing())  # workers' values stay unreferenced until a manifest is written
        return graph.run(executor, stop)
