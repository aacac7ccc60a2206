"""The command line, and upstream's programmatic entry points to it.

``repype PATH [--run | --reset | --json] [--task T]... [--task-dir D]...`` lists the selected
pending tasks with the reason each is pending and the batch's plan (a dry run: see
:mod:`repype.plan`; ``--json`` prints the plan as JSON); ``--run`` runs them, ``--reset``
resets them after confirmation. ``repype store CMD ...`` inspects and maintains a store (see
:mod:`repype.storecli`).

A project's own ``__main__.py`` calls :func:`run_cli` (``run_cli(task_cls=MyTask)``); a
notebook awaits the coroutine function returned by :func:`main`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

import repype.status
from repype import audit, checks
from repype.batch import Batch, RunContext
from repype.console import ConsoleReader, format_hms  # noqa: F401 (format_hms: upstream's name here)
from repype.plan import Plan
from repype.task import Task
from repype.typing import PathLike
from repype.why import print_why


class StatusReaderConsoleAdapter(ConsoleReader):
    """Upstream's name of the console status reader: prints the progress of a batch.

    Use it as ``async with StatusReaderConsoleAdapter(status.filepath, blocking=True): ...``, or
    subclass it and override ``format(positions, status, intermediate)`` (call ``super().format``
    for the updates you do not handle). See :class:`repype.console.ConsoleReader`.
    """


class SelectionError(ValueError):
    """A `--task` or `--task-dir` names nothing runnable in the task tree."""


ReaderFactory = Callable[..., repype.status.StatusReader]


def main(
    path: PathLike,
    run: bool = False,
    reset: bool = False,
    tasks: Sequence[PathLike] = (),
    task_dirs: Sequence[PathLike] = (),
    task_cls: type[Task] = Task,
    status_reader_cls: ReaderFactory = StatusReaderConsoleAdapter,
    *,
    executor: int | str | None = None,
    yes: bool = False,
    debug: bool = False,
    strict: bool = False,
    check_determinism: float | None = None,
    plan_json: bool = False,
    why: bool = False,
) -> Callable[[], Coroutine[Any, Any, bool]]:
    """Loads the task tree at `path` and returns a coroutine function that does the work (as upstream).

    ``await main(root, run=True)()`` runs the selected pending tasks and returns True on success;
    without `run` it prints the dry run and returns True; with `reset` it resets the selected
    tasks after confirmation (`yes` skips the question, **new**). `tasks` and `task_dirs`
    select tasks by path, relative to the current directory or to the tree's root; a selection
    that names nothing runnable raises :class:`SelectionError`. `executor` (**new**) runs the
    batch's stage executions in parallel, each once (see :meth:`repype.batch.Batch.run`).
    Progress is printed by `status_reader_cls`, called
    as ``status_reader_cls(status.filepath, batch=batch)`` (plus ``debug=True`` with `debug`,
    **new**: tracebacks of errors other than a stage's own).

    Unless resetting, the selected tasks' configuration is checked first (**new**, see
    :mod:`repype.checks`): warnings go to standard error, errors (all findings with `strict`)
    raise :class:`repype.checks.ConfigurationError` before anything runs. With
    `check_determinism` (**new**, a fraction), the coroutine re-runs that share of the recorded
    executions of the selected tasks instead (see :mod:`repype.audit`), True when all matched.
    With `plan_json` (**new**), the dry run prints the plan as one JSON document instead (see
    :meth:`repype.plan.Plan.to_json`).
    With `why` (**new**), the dry run says for each pending task why its stages cannot be reused
    (see :mod:`repype.why`).

    Raises `AssertionError` when both `run` and `reset` are given, and the errors of loading
    the tree (a broken `task.yml`, a pipeline that cannot be imported) at once.
    """
    if run and reset:
        raise AssertionError("Cannot run and reset at the same time")
    root = pathlib.Path(path).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"no task tree at {path}")
    if str(root) not in sys.path:  # stages may live next to the task.yml files
        sys.path.insert(0, str(root))
    batch = Batch(task_cls)
    batch.load(root)
    if not batch.tasks:
        raise SelectionError(f"no task.yml in {root} or below it: not a task tree")
    selected = select(batch, root, tasks, task_dirs)
    if not reset:  # warnings are printed; errors stop here, before anything runs
        checks.report(checks.batch_findings(selected, strict, lambda task: _relative(root, task.path)), sys.stderr)
    contexts = selected if reset else [context for context in selected if context.pending]

    async def _main() -> bool:
        if check_determinism is not None:
            return audit.audit_command(selected, check_determinism, sys.stdout) == 0
        if reset:
            return reset_tasks(contexts, yes)
        if why:
            print_why(lambda path: _relative(root, path), contexts, sys.stdout, as_json=plan_json)
            return True
        parallel = executor is not None and executor != 1
        plan = batch.plan(contexts, up_to_date=len(selected) - len(contexts), parallel=parallel)
        if plan_json and not run:
            print(json.dumps(plan.to_json(), indent=2))
            return True
        print_plan(root, contexts, plan)
        if not run:
            print('DRY RUN: use "--run" to run the tasks')
            return True
        with repype.status.create() as status:
            options = {"debug": True} if debug else {}  # upstream readers take no such option
            async with status_reader_cls(status.filepath, batch=batch, **options):
                repype.status.update(
                    status,
                    info="batch-plan",
                    tasks=len(contexts),
                    to_run=plan.to_run,
                    reused=plan.reused,
                    shared=plan.shared,
                    estimated_seconds=plan.estimated_seconds,
                    unestimated=plan.unestimated,
                )
                return await batch.run(contexts, status=status, executor=executor, plan=plan)

    return _main


def run_cli_ex(*args: Any, **kwargs: Any) -> bool:
    """Runs :func:`main` with the given options to completion; True on success (as upstream)."""
    return asyncio.run(main(*args, **kwargs)())


def run_cli(task_cls: type[Task] = Task, status_reader_cls: ReaderFactory = StatusReaderConsoleAdapter) -> bool:
    """The command line of a project's own ``__main__.py``: parses `sys.argv`, runs, returns True on success.

    Accepts the options of ``repype PATH ...``; errors are reported as one line (see :func:`batch_main`).
    """
    return batch_main(sys.argv[1:], task_cls=task_cls, status_reader_cls=status_reader_cls) == 0


def console_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `repype` console script and of `python -m repype`; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["store"]:
        from repype.storecli import store_main

        return store_main(argv[1:])
    return batch_main(argv)


# --- batch runs -------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def batch_parser() -> argparse.ArgumentParser:
    """The argument parser of `repype PATH ...`."""
    from repype.version import VERSION

    parser = argparse.ArgumentParser(
        prog="repype",
        description="Run the pending tasks of a task tree (a dry run unless --run). See also: repype store --help.",
    )
    parser.add_argument("--version", action="version", version=f"repype {VERSION}")
    parser.add_argument("path", type=pathlib.Path, help="root directory of the task tree")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--run", action="store_true", help="run the selected pending tasks")
    action.add_argument("--reset", action="store_true", help="reset the selected tasks (asks to confirm)")
    parser.add_argument("--yes", action="store_true", help="with --reset: do not ask to confirm")
    action.add_argument(
        "--check-determinism",
        action="store_true",
        help="re-run recorded stage executions of the selected tasks and compare their outputs",
    )
    parser.add_argument(
        "--json", action="store_true", help="dry run (or --why): print the plan (or the reasons) as one JSON document"
    )
    action.add_argument(
        "--why", action="store_true", help="dry run: why each stage of the pending tasks cannot be reused"
    )
    parser.add_argument(
        "--sample", type=float, default=1.0, metavar="FRACTION", help="with --check-determinism: re-run this share"
    )
    parser.add_argument("--task", action="append", default=[], type=pathlib.Path, help="select this task")
    parser.add_argument(
        "--task-dir", action="append", default=[], type=pathlib.Path, help="select the tasks in this directory"
    )
    workers = parser.add_mutually_exclusive_group()
    workers.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="run the stage executions of the batch in N local processes",
    )
    workers.add_argument(
        "--dask",
        nargs="?",
        const="dask",
        default=None,
        metavar="ADDRESS",
        help="run the stage executions of the batch on the Dask scheduler at ADDRESS (default: a new local cluster)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument(
        "--strict", action="store_true", help="configuration warnings are errors: exit 1 and run nothing"
    )
    return parser


def batch_main(
    argv: Sequence[str], task_cls: type[Task] = Task, status_reader_cls: ReaderFactory = StatusReaderConsoleAdapter
) -> int:
    """Runs ``repype PATH ...`` with `argv` (without the program name); returns the exit code.

    0 on success, 1 on failure (a user error is one line on standard error; `--debug` shows its
    traceback), 2 for usage errors, including selections that name nothing runnable.
    """
    parser = batch_parser()
    args = parser.parse_args(argv)
    if args.json and (args.run or args.reset or args.check_determinism):
        parser.error("--json goes with a dry run or --why, not with --run, --reset or --check-determinism")
    try:
        coroutine = main(
            args.path,
            run=args.run,
            reset=args.reset,
            tasks=args.task,
            task_dirs=args.task_dir,
            task_cls=task_cls,
            status_reader_cls=status_reader_cls,
            executor=args.dask if args.dask is not None else args.jobs,
            yes=args.yes,
            debug=args.debug,
            strict=args.strict,
            check_determinism=args.sample if args.check_determinism else None,
            plan_json=args.json,
            why=args.why,
        )
        with _interrupted_by_sigterm():
            return 0 if asyncio.run(coroutine()) else 1
    except KeyboardInterrupt:
        print("repype: interrupted; completed tasks and stage executions are kept, a re-run resumes", file=sys.stderr)
        return 130
    except SelectionError as error:
        return _report(error, args.debug, code=2)
    except BrokenPipeError:  # output piped into a reader that stopped reading (`| head`)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as error:  # a broken task.yml, pipeline or store: say which
        return _report(error, args.debug, code=1)


@contextlib.contextmanager
def _interrupted_by_sigterm() -> Iterator[None]:
    """SIGTERM interrupts like Ctrl-C while the block runs, so a running task's process is stopped too."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _report(error: BaseException, debug: bool, code: int) -> int:
    if debug:
        traceback.print_exception(error)
    print(f"repype: {error}", file=sys.stderr)
    return code


def select(
    batch: Batch, root: pathlib.Path, tasks: Sequence[PathLike], task_dirs: Sequence[PathLike]
) -> list[RunContext]:
    """The run contexts named by `tasks` or below one of `task_dirs` (all runnable ones when neither is given).

    Paths are taken relative to the current directory, or else to the tree's `root`. Raises
    :class:`SelectionError` for a path that names no task of the tree, a task that is not
    runnable, or a directory without runnable tasks.
    """
    contexts = batch.contexts
    if not tasks and not task_dirs:
        return contexts
    chosen: list[RunContext] = []
    for path in tasks:
        task_path = _tree_path(root, path, "--task")
        found = [context for context in contexts if context.task.path == task_path]
        if not found:
            task = batch.tasks.get(task_path)
            reason = "is not runnable" if task is not None else "is not a task of the tree"
            raise SelectionError(f"--task {path}: {_relative(root, task_path)} {reason} (tree: {root})")
        chosen += found
    for path in task_dirs:
        directory = _tree_path(root, path, "--task-dir")
        found = [c for c in contexts if c.task.path == directory or directory in c.task.path.parents]
        if not found:
            raise SelectionError(f"--task-dir {path}: no runnable task in {_relative(root, directory)} (tree: {root})")
        chosen += found
    unique = {context.task.path: context for context in chosen}
    return [unique[path] for path in sorted(unique)]


def _tree_path(root: pathlib.Path, path: PathLike, option: str) -> pathlib.Path:
    """`path` resolved against the current directory, or else against `root`; it must lie in the tree."""
    for candidate in (pathlib.Path(path).resolve(), (root / path).resolve()):
        if (candidate == root or root in candidate.parents) and candidate.is_dir():
            return candidate
    raise SelectionError(f"{option} {path}: no such directory in the task tree {root}")


def _relative(root: pathlib.Path, path: pathlib.Path) -> str:
    return path.relative_to(root).as_posix() if path != root else "."


def print_plan(root: pathlib.Path, contexts: list[RunContext], plan: Plan) -> None:
    """Prints the selected pending tasks, why each is pending, and the batch's `plan` for each and in total."""
    print(f"{len(contexts)} task(s) selected for running")
    for context, task_plan in zip(contexts, plan.tasks, strict=True):
        print(f"  {task_plan.pending:<13} {_relative(root, context.task.path)}")
        print(f"  {'':<13} {task_plan.summary()}")
    for line in plan.totals():
        print(line)
    print(f"{len(contexts)} task(s) to run, {plan.up_to_date} up to date")


def reset_tasks(contexts: list[RunContext], yes: bool = False) -> bool:
    """Resets `contexts` after the user types their number (or at once with `yes`); True when reset."""
    for context in contexts:
        print(f"  {context.task.path}")
    if not yes:
        try:
            answer = input(f"Type {len(contexts)} to reset these {len(contexts)} task(s): ").strip()
        except EOFError:
            print("\nNothing was reset: no answer on standard input (use --yes to reset without asking).")
            return False
        if answer != str(len(contexts)):
            print("Nothing was reset.")
            return False
    for context in contexts:
        context.task.reset()
    print(f"{len(contexts)} task(s) reset.")
    return True
