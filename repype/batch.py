"""Batches of tasks: load a task tree from disk, find what is pending, run it."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import multiprocessing
import os
import pathlib
import pickle
import sys
import threading
import time
from typing import Any

import dill
import yaml

import repype.status
from repype.config import Config
from repype.executor import Executor, create_executor
from repype.graph import run_graph
from repype.pipeline import Pipeline, failure_details
from repype.plan import Plan, Recorded, check_plan_matches, plan_batch, recorded_of
from repype.task import PathLike, PendingReason, Task


class RunContext:
    """The pipeline and the hyperparameters used to run a task.

    Args:
        task: The task to run (must be runnable).
    """

    def __init__(self, task: Task):
        if not task.runnable:
            raise ValueError(f"task {task.path} is not runnable")
        self.task = task
        self.pipeline: Pipeline = task.create_pipeline()
        self.config: Config = task.create_config()

    @property
    def pending(self) -> PendingReason:
        """Why the task needs to run (see :meth:`Task.is_pending`), or `''`."""
        return self.task.is_pending(self.pipeline, self.config)

    def run(self, **kwargs) -> Any:
        """Run the task with this context's pipeline and hyperparameters."""
        return self.task.run(self.config, pipeline=self.pipeline, **kwargs)

    def __repr__(self) -> str:
        return f"RunContext({self.task.path})"


def run_task_process(exit_code, payload: bytes) -> None:
    """Run a task in a child process; send 0 through `exit_code` on success, 1 on failure.

    `payload` is the dill-serialised tuple `(run context, status, sys.path, recorded)` (`recorded`:
    what the batch's plan found recorded for the task, or None, pickled). Failures are reported as an
    `error` status event with the traceback and the failing stage.
    """
    context, status, sys_path, recorded = dill.loads(payload)
    recorded = pickle.loads(recorded)
    sys.path[:0] = [entry for entry in sys_path if entry not in sys.path]
    try:
        options = _accepted(context.task.run, return_data=False, recorded=recorded)  # nobody receives the data
        context.run(status=status, **options)
        code = 0
    except BaseException as error:
        repype.status.update(status, info="error", task=str(context.task.path.resolve()), **failure_details(error))
        code = 1
    with contextlib.suppress(OSError):  # the batch that started this process is gone
        exit_code.send(code)


def _accepted(method: Any, **options: Any) -> dict[str, Any]:
    """The `options` that `method` takes: a `Task` subclass may override `run` with upstream's signature."""
    parameters = inspect.signature(method).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return options
    return {name: value for name, value in options.items() if name in parameters}


def _stop(process: multiprocessing.process.BaseProcess) -> None:
    """Terminates `process`, and kills it when it has not ended after one second."""
    if process.exitcode is not None:
        return
    process.terminate()
    process.join(1)
    if process.exitcode is None:
        process.kill()
        process.join()


def _check_no_gap(root: pathlib.Path, directory: pathlib.Path) -> None:
    """Raises `ValueError` when a folder above the task at `directory` (within `root`) has a `task.yml`.

    The task has no parent, so the folder right above it has no `task.yml`.
    """
    for ancestor in directory.parents:
        if ancestor == root.parent:
            return
        if (ancestor / "task.yml").is_file():
            raise ValueError(
                f"folder {directory.parent} has no task.yml, but it lies between the task {ancestor} and the task "
                f"{directory}: every folder of a task tree needs a task.yml (an empty one inherits everything)"
            )


class Batch:
    """A collection of tasks, each identified by its path.

    Args:
        task_cls: The class to use for tasks.
    """

    def __init__(self, task_cls: type[Task] = Task):
        self.task_cls = task_cls
        self.tasks: dict[pathlib.Path, Task] = {}
        self._process: multiprocessing.Process | None = None
        self._pipe = None
        self._stop: threading.Event | None = None

    @property
    def resolved_tasks(self) -> dict[pathlib.Path, Task]:
        """Every loaded task, by its resolved path (as upstream; :attr:`tasks` is keyed the same way)."""
        return dict(self.tasks)

    def task(self, path: PathLike, spec: dict | None = None) -> Task | None:
        """The task at `path`, loaded from `spec` or `path/task.yml` (parents first) on first use.

        Returns None when there is neither a spec nor a `task.yml`. Asking again with a
        different spec than the loaded one is an error.
        """
        path = pathlib.Path(path).resolve()
        task = self.tasks.get(path)
        if spec is None:
            spec_path = path / "task.yml"
            if not spec_path.is_file():
                return task
            try:
                spec = yaml.safe_load(spec_path.read_text()) or {}
            except yaml.YAMLError as error:
                raise ValueError(f"task {path}: cannot parse task.yml: {error}") from error
            if not isinstance(spec, dict):
                raise ValueError(f"task {path}: task.yml must hold a mapping, not {type(spec).__name__}")
        if task is not None:
            if task.spec != spec:
                raise ValueError(f"task {path}: the requested specification differs from the loaded one")
            return task
        parent = self.task(path.parent) if path.parent != path else None
        task = self.task_cls(path=path, spec=spec, parent=parent)
        self.tasks[path] = task
        return task

    def load(self, root: PathLike) -> None:
        """Load every task below `root` (every directory with a `task.yml`).

        Dot-directories (such as the default store `.repype`) and the local stores of the loaded
        tasks are not searched. A directory without `task.yml` between a task and the task
        above it is an error naming that directory: every folder of a tree needs a `task.yml`.
        """
        root = pathlib.Path(root).resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"no task directory at {root}")
        stores: set[pathlib.Path] = set()
        for directory, subdirectories, files in os.walk(root):
            directory = pathlib.Path(directory)
            if "task.yml" in files:
                task = self.task(directory)
                if task.parent is None and directory != root:
                    _check_no_gap(root, directory)
                if "://" not in task.store_url:
                    stores.add(pathlib.Path(task.store_url))
            subdirectories[:] = sorted(
                name for name in subdirectories if not name.startswith(".") and directory / name not in stores
            )

    @property
    def contexts(self) -> list[RunContext]:
        """A run context for each runnable task, in path order."""
        return [RunContext(task) for path, task in sorted(self.tasks.items()) if task.runnable]

    @property
    def pending(self) -> list[RunContext]:
        """The run contexts of the pending tasks, in path order."""
        return [context for context in self.contexts if context.pending]

    def context(self, path: PathLike) -> RunContext | None:
        """The run context of the task at `path` (None when there is no such runnable task)."""
        task = self.task(path)
        return RunContext(task) if task is not None and task.runnable else None

    def plan(self, contexts: list[RunContext] | None = None, up_to_date: int = 0, parallel: bool = False) -> Plan:
        """The deduplicated plan of running `contexts` (default: the pending ones) in this order.

        Each distinct stage execution counts once across all tasks and inputs (see :mod:`repype.plan`);
        `up_to_date` is how many selected tasks need not run (reported with the plan). `parallel`
        plans a run with an executor (see :meth:`run`).
        """
        return plan_batch(self.pending if contexts is None else contexts, up_to_date, parallel=parallel)

    async def run(
        self,
        contexts: list[RunContext] | None = None,
        status: Any = None,
        executor: Executor | int | str | None = None,
        plan: Plan | None = None,
    ) -> bool:
        """Run the given contexts (default: the pending ones); True when every task completed.

        Without `executor` (or with 1), the tasks run in path order, each in a fresh process,
        and the batch stops at the first failure. With an `executor` (**new**: an int N for N
        local processes, `'dask'` or a scheduler address, see
        :func:`repype.executor.create_executor`), the distinct stage executions of all tasks
        run at once on that one executor, each once, in dependency order (see
        :mod:`repype.graph`); each task is committed as soon as its executions are done, and a
        failing task does not stop the others. `plan` is their plan (:meth:`plan`, with
        `parallel` when there is an executor): a parallel batch runs it (it is made when not
        given), tasks run in order adopt what it found recorded without asking the store again.
        """
        if self._process is not None or self._stop is not None:
            raise RuntimeError("a task of this batch is already running")
        contexts = self.pending if contexts is None else contexts
        if plan is not None:
            check_plan_matches(plan, contexts)
        started = time.monotonic()
        workers = create_executor(executor)
        try:
            if workers.remote:
                return await self._run_in_parallel(contexts, status, workers, plan, started)
            return await self._run_in_order(contexts, status, plan, started)
        finally:
            if workers is not executor:
                workers.close()

    async def _run_in_order(self, contexts: list[RunContext], status: Any, plan: Plan | None, started: float) -> bool:
        for step, context in enumerate(contexts):
            task_status = repype.status.derive(status)
            repype.status.update(
                task_status,
                info="enter",
                task=str(context.task.path.resolve()),
                step=step,
                step_count=len(contexts),
            )
            recorded = recorded_of(plan, step) if plan is not None else None
            code = await self._run_in_process(context, task_status, status, recorded)
            if code != 0:
                repype.status.update(status, info="interrupted", exit_code=code)
                self._report_finished(status, contexts, step, failed=1, started=started)
                return False
        self._report_finished(status, contexts, len(contexts), failed=0, started=started)
        return True

    async def _run_in_parallel(
        self, contexts: list[RunContext], status: Any, workers: Executor, plan: Plan | None, started: float
    ) -> bool:
        self._stop = threading.Event()
        try:
            result = await asyncio.to_thread(run_graph, contexts, workers, status, plan=plan, stop=self._stop)
        except BaseException:  # cancelled or interrupted: stop the coordinator, which cancels the work
            self._stop.set()
            repype.status.update(status, info="interrupted", exit_code=None)
            raise
        finally:
            self._stop = None
        if result.interrupted:
            repype.status.update(status, info="interrupted", exit_code=None)
        completed, failed = len(result.completed), len(result.failed)
        self._report_finished(status, contexts, completed, failed=failed, started=started)
        return completed == len(contexts)

    async def _run_in_process(
        self, context: RunContext, task_status: Any, status: Any, recorded: Recorded | None
    ) -> int:
        """Runs one task in a fresh process; its exit code (0 on success)."""
        spawn = multiprocessing.get_context("spawn")
        receiver, sender = spawn.Pipe(duplex=False)
        self._pipe = sender
        recorded_bytes = pickle.dumps(recorded)  # plain data: pickle is many times faster than dill here
        payload = dill.dumps((context, task_status, list(sys.path), recorded_bytes))
        self._process = spawn.Process(target=run_task_process, args=(sender, payload))
        try:
            self._process.start()
            while self._process.is_alive() and not receiver.poll():
                await asyncio.sleep(0.05)
            code = receiver.recv() if receiver.poll(5) else self._process.exitcode
            self._process.join()
            return code
        except BaseException:  # cancelled or interrupted: the task's process must not outlive the batch
            _stop(self._process)
            repype.status.update(status, info="interrupted", exit_code=None)
            raise
        finally:
            self._process = None

    @staticmethod
    def _report_finished(status: Any, contexts: list[RunContext], completed: int, failed: int, started: float) -> None:
        repype.status.update(
            status,
            info="finished",
            completed=completed,
            failed=failed,
            skipped=len(contexts) - completed - failed,
            seconds=time.monotonic() - started,
        )

    async def cancel(self) -> None:
        """Cancel the running task: terminate its process (kill it after one second).

        A parallel batch stops submitting work and cancels what runs.
        """
        if self._stop is not None:
            self._stop.set()
        process = self._process
        if process is None:
            return
        await asyncio.to_thread(_stop, process)
        if self._pipe is not None:
            self._pipe.send(2)
