"""The command line: batch runs of task trees, and `repype store ...` maintenance.

``repype PATH [--run | --reset] [--task T]... [--task-dir D]...`` lists the selected pending
tasks with the reason each is pending and what the store already holds for it (a dry run);
``--run`` runs them, ``--reset`` resets them after confirmation. ``repype store CMD URL``
inspects and maintains a store. Exit status 0 on success, 1 on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import sys
from collections.abc import Sequence

import repype.status
from repype import audit, checks
from repype.batch import Batch, RunContext
from repype.task import Task


def console_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `repype` console script and of `python -m repype`; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["store"]:
        from repype.storecli import store_main

        return store_main(argv[1:])
    return batch_main(argv)


# --- batch runs -------------------------------------------------------------------------------


def batch_parser() -> argparse.ArgumentParser:
    """The argument parser of `repype PATH ...`."""
    parser = argparse.ArgumentParser(
        prog="repype",
        description="Run the pending tasks of a task tree (a dry run unless --run). See also: repype store --help.",
    )
    parser.add_argument("path", type=pathlib.Path, help="root directory of the task tree")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--run", action="store_true", help="run the selected pending tasks")
    action.add_argument("--reset", action="store_true", help="reset the selected tasks (asks to confirm)")
    action.add_argument(
        "--check-determinism",
        action="store_true",
        help="re-run recorded stage executions of the selected tasks and compare their outputs",
    )
    parser.add_argument(
        "--sample", type=float, default=1.0, metavar="FRACTION", help="with --check-determinism: re-run this share"
    )
    parser.add_argument("--task", action="append", default=[], type=pathlib.Path, help="select this task")
    parser.add_argument(
        "--task-dir", action="append", default=[], type=pathlib.Path, help="select the tasks in this directory"
    )
    workers = parser.add_mutually_exclusive_group()
    workers.add_argument("--jobs", type=int, default=None, metavar="N", help="run the inputs in N local processes")
    workers.add_argument(
        "--dask",
        nargs="?",
        const="dask",
        default=None,
        metavar="ADDRESS",
        help="run the inputs on the Dask scheduler at ADDRESS (default: a new local cluster)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="configuration warnings are errors: exit 1 and run nothing"
    )
    return parser


def batch_main(argv: Sequence[str], task_cls: type[Task] = Task) -> int:
    """Run the batch command line with `argv` (without the program name)."""
    args = batch_parser().parse_args(argv)
    root = args.path.resolve()
    if not root.is_dir():
        print(f"repype: no task tree at {args.path}", file=sys.stderr)
        return 1
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        batch = Batch(task_cls)
        batch.load(root)
        candidates = batch.contexts if args.reset else batch.pending
        contexts = select(candidates, args.task, args.task_dir)
        checked = [] if args.reset else select(batch.contexts, args.task, args.task_dir)
        findings = checks.batch_findings(checked, args.strict, lambda task: describe(root, task))
    except Exception as error:  # a broken task.yml or pipeline: say which, no traceback
        print(f"repype: {error}", file=sys.stderr)
        return 1
    if checks.report(findings, sys.stderr):
        return 1
    if args.check_determinism:
        return audit.audit_command(checked, args.sample, sys.stdout)
    if args.reset:
        return reset(contexts)
    print(f"{len(contexts)} task(s) selected for running")
    for context in contexts:
        print(f"  {context.pending or 'completed':<13} {describe(root, context.task)}")
        print(f"  {'':<13} {reuse_summary(context)}")
    if not args.run:
        print('DRY RUN: use "--run" to run the tasks')
        return 0
    executor = args.dask if args.dask is not None else args.jobs
    return 0 if asyncio.run(run_batch(batch, contexts, executor)) else 1


def select(contexts: list[RunContext], tasks: list[pathlib.Path], task_dirs: list[pathlib.Path]) -> list[RunContext]:
    """The contexts named by `--task` or below a `--task-dir` (all when neither is given)."""
    if not tasks and not task_dirs:
        return contexts
    tasks = [path.resolve() for path in tasks]
    task_dirs = [path.resolve() for path in task_dirs]
    return [
        context
        for context in contexts
        if context.task.path in tasks
        or any(context.task.path == directory or directory in context.task.path.parents for directory in task_dirs)
    ]


def describe(root: pathlib.Path, task: Task) -> str:
    """The task's path relative to the tree's root (the root itself is '.')."""
    return task.path.relative_to(root).as_posix() if task.path != root else "."


def reuse_summary(context: RunContext) -> str:
    """What the store already holds for the task: stage executions it will reuse, of how many."""
    plan = context.task.reuse_plan(context.pipeline, context.config)
    reused = sum(len(stages) for stages in plan.values())
    total = len(plan) * len(context.pipeline.stages)
    return f"{reused} of {total} stage executions reused from the store, {total - reused} to run (at most)"


def reset(contexts: list[RunContext]) -> int:
    """Reset `contexts` after the user types their number."""
    for context in contexts:
        print(f"  {context.task.path}")
    answer = input(f"Type {len(contexts)} to reset these {len(contexts)} task(s): ").strip()
    if answer != str(len(contexts)):
        print("Nothing was reset.")
        return 1
    for context in contexts:
        context.task.reset()
    print(f"{len(contexts)} task(s) reset.")
    return 0


async def run_batch(batch: Batch, contexts: list[RunContext], executor: int | str | None = None) -> bool:
    """Run the contexts with progress printed from the task processes (inputs fanned out by `executor`)."""
    intermediate = os.environ.get("REPYPE_CLI_INTERMEDIATE", "1") != "0"
    with repype.status.create() as status:
        async with repype.status.ConsoleReader(status, intermediate=intermediate):
            return await batch.run(contexts, status=status, executor=executor)
