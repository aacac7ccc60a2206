"""`repype store ...`: inspect and maintain a store, and look at the results in it.

``repype store CMD TARGET`` where TARGET is a store (a path or an fsspec URL) or a directory of a
task tree: then the store and its storage options come from the tree's `task.yml` files, and
`ls`, `show`, `table` and `plot` look at the tasks at or below that directory. Commands: `ls`,
`du`, `verify`, `gc`, `show`, `explain`, `table`, `plot`. Exit status 0 on success, 1 on failure or damage.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import difflib
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import yaml

import repype.store
from repype.batch import Batch
from repype.store import StoreError
from repype.store.explain import format_explanation
from repype.store.listing import list_tasks
from repype.store.table import flatten_config, results_table
from repype.task import Task, TaskError

COMMANDS = {
    "ls": "tasks with their inputs and fields, complete or damaged",
    "du": "bytes per task, unique vs shared, dedup ratio",
    "verify": "re-hash every value and check every reference (exit 1 on damage)",
    "gc": "delete what no task reaches (a dry run unless --yes)",
    "show": "one task: config, specification, stage hashes, inputs, fields, run times",
    "explain": "where a stored value came from: stages, code, hyperparameters, back to the input id",
    "table": "a table across tasks: one row per task and input, hyperparameters and scalar fields",
    "plot": "a field against a hyperparameter, one series per value of another (a PNG)",
}
JSON_COMMANDS = ("ls", "du", "verify", "gc", "show", "explain")


@dataclasses.dataclass
class Target:
    """The store a command works on and, when named by a task directory, that task.

    `prefix` is the task's name in the store (None for a store or a tree's root: every task).
    """

    store: repype.store.Store
    task: Task | None = None

    @property
    def prefix(self) -> str | None:
        """The name in the store of the task directory given, unless it is the root or a store was given."""
        return None if self.task is None or self.task.ref_name == "." else self.task.ref_name

    def selects(self, name: str) -> bool:
        """Whether the task `name` of the store is at or below the directory given."""
        return self.prefix is None or name == self.prefix or name.startswith(self.prefix + "/")

    def tasks(self) -> list[str]:
        """The tasks of the store that the target selects."""
        return [name for name in self.store.tasks(strict=False) if self.selects(name)]

    def tree_tasks(self) -> list[str]:
        """The runnable tasks of the tree at or below the directory given (none for a store)."""
        if self.task is None:
            return []
        batch = Batch()
        batch.load(self.task.path)
        return sorted(task.ref_name for task in batch.tasks.values() if task.runnable and self.selects(task.ref_name))


def store_parser() -> argparse.ArgumentParser:
    """The argument parser of `repype store ...`."""
    parser = argparse.ArgumentParser(prog="repype store", description="Inspect and maintain a repype store.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in COMMANDS.items():
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("target", metavar="STORE_OR_TREE", help="store path or fsspec URL, or a task directory")
        command.add_argument(
            "-o",
            "--storage-option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="fsspec storage option (repeatable; wins over the tree's storage_options)",
        )
        if name in JSON_COMMANDS:
            command.add_argument("--json", action="store_true", help="print JSON instead of text")
        _add_arguments(name, command)
    return parser


def _add_arguments(name: str, command: argparse.ArgumentParser) -> None:
    if name == "verify":
        command.add_argument("--repair", action="store_true", help="delete damaged values and their records")
    elif name == "gc":
        command.add_argument("--grace", type=float, default=86400.0, help="spare what is younger (seconds)")
        command.add_argument("--yes", action="store_true", help="really delete (default: dry run)")
    elif name == "show":
        command.add_argument("task", nargs="?", help="task name as `ls` lists it (default: the task directory given)")
    elif name == "explain":
        command.add_argument("task", metavar="TASK", help="task name as `ls` lists it")
        command.add_argument("input", metavar="INPUT", help="the input id")
        command.add_argument("field", metavar="FIELD", help="the stored field")
    elif name == "table":
        command.add_argument(
            "--field", action="append", help="field column(s), comma-separated or repeated (default: scalar fields)"
        )
        command.add_argument(
            "--config", action="append", metavar="KEY", help="hyperparameter column(s), e.g. smooth/sigma or smooth"
        )
        command.add_argument("--csv", metavar="FILE", help="also write the table as CSV to FILE ('-': only CSV)")
    elif name == "plot":
        command.add_argument("--x", required=True, help="the hyperparameter (or field) on the x axis")
        command.add_argument("--y", required=True, help="the field (or hyperparameter) on the y axis")
        command.add_argument("--by", help="one series per value of this hyperparameter (or field)")
        command.add_argument("--out", default="plot.png", help="the PNG file to write (default: plot.png)")


def store_main(argv: Sequence[str]) -> int:
    """Run `repype store ...` with `argv` (after the word `store`); returns the exit status."""
    args = store_parser().parse_args(argv)
    writes = (args.command == "verify" and args.repair) or (args.command == "gc" and args.yes)
    try:
        target = open_target(args.target, parse_storage_options(args.storage_option), writes)
        return RUNNERS[args.command](target, args)
    except (StoreError, TaskError, ValueError, KeyError, ImportError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"repype store {args.command}: {message}", file=sys.stderr)
        return 1


def open_target(target: str, options: dict[str, Any], writes: bool = False) -> Target:
    """The store named by `target` (a store, or a task directory whose tree says where its store is).

    For a task directory, the store URL and `storage_options` are those its task would use
    (`Task.store_url`, the `storage_options` spec key); `options` win over the tree's.
    """
    path = pathlib.Path(target)
    task = None
    if "://" not in target and (path / "task.yml").is_file():
        task = Batch().task(path)
        options = {**(task.full_spec.get("storage_options") or {}), **options}
        url = task.store_url
    elif "://" not in target and path.is_dir() and not (path / "zarr.json").is_file():
        raise StoreError(f"{target} is neither a task directory (it has no task.yml) nor a repype store")
    else:
        url = target
    try:
        store = repype.store.open(url, storage_options=options or None, mode="a" if writes else "r")
    except repype.store.StoreMissingError as error:
        if task is None:
            raise
        raise StoreError(f"{error} (the store of the task tree at {target}; run the tree first)") from None
    return Target(store, task)


def parse_storage_options(pairs: list[str]) -> dict:
    """`KEY=VALUE` pairs as a dict; values that parse as YAML scalars (numbers, booleans) are typed."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"storage option '{pair}' is not KEY=VALUE")
        options[key] = yaml.safe_load(value) if value else ""
    return options


# --- the commands -----------------------------------------------------------------------------


def report_document(report: Any) -> dict[str, Any]:
    """A report of `ls`, `du`, `verify` or `gc` as JSON data: its fields plus `ok` (and `dedup_ratio`)."""
    document = dataclasses.asdict(report) if dataclasses.is_dataclass(report) else dict(vars(report))
    document["ok"] = report.ok
    if hasattr(report, "dedup_ratio"):
        document["dedup_ratio"] = report.dedup_ratio
    return document


def _print_report(report: Any, args: argparse.Namespace) -> int:
    print(json.dumps(report_document(report), indent=2, default=str) if args.json else report.format())
    return 0 if report.ok or getattr(report, "repaired", False) else 1


def run_ls(target: Target, args: argparse.Namespace) -> int:
    """`ls`: the selected tasks, complete or damaged (exit 1 when one is damaged)."""
    return _print_report(list_tasks(target.store, target.tasks(), target.tree_tasks()), args)


def run_du(target: Target, args: argparse.Namespace) -> int:
    """`du`: bytes of the whole store, per task."""
    return _print_report(target.store.du(), args)


def run_verify(target: Target, args: argparse.Namespace) -> int:
    """`verify [--repair]` on the whole store."""
    return _print_report(target.store.verify(repair=args.repair), args)


def run_gc(target: Target, args: argparse.Namespace) -> int:
    """`gc [--grace S] [--yes]` on the whole store."""
    return _print_report(target.store.gc(grace=args.grace, dry_run=not args.yes), args)


def task_document(view: Any) -> dict[str, Any]:
    """What `show` tells about a task, as JSON data."""
    fields = {}
    for input_id in view.input_ids:
        for name, ref in view.refs(input_id).items():
            fields.setdefault(name, {key: ref[key] for key in ("codec", "dtype", "shape") if key in ref})
    return {
        "task": view.name,
        "store": view.store.url,
        "created": _timestamp(view.created),
        "input_ids": view.input_ids,
        "fields": dict(sorted(fields.items())),
        "stages": view.stages,
        "times": view.times,
        "config": view.config,
        "spec": view.spec,
    }


def _timestamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_task(document: dict[str, Any]) -> str:
    """The text `show` prints for a :func:`task_document`."""

    def describe(info: dict[str, Any]) -> str:
        dtype = np.dtype(info["dtype"]).name if "dtype" in info else ""
        shape = "x".join(map(str, info["shape"])) if info.get("shape") else ""
        return " ".join(part for part in (info.get("codec", ""), dtype, shape) if part)

    width = max([5, *map(len, document["stages"])])
    lines = [
        f"task {document['task']} in {document['store']}, completed {document['created']}",
        f"inputs ({len(document['input_ids'])}): {', '.join(map(str, document['input_ids']))}",
        "fields:",
        *(f"  {name:<{width}}  {describe(info)}" for name, info in document["fields"].items()),
        "stages (implementation sha, seconds over all inputs):",
        *(
            f"  {stage:<{width}}  {sha}  {sum(document['times'].get(stage, {}).values()):.3f} s"
            for stage, sha in document["stages"].items()
        ),
        "config:",
        _indented_yaml(document["config"]),
        "spec:",
        _indented_yaml(document["spec"]),
    ]
    return "\n".join(lines)


def _indented_yaml(data: Any) -> str:
    text = yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=True, default_flow_style=False)
    return "\n".join("  " + line for line in text.rstrip().splitlines())


def run_show(target: Target, args: argparse.Namespace) -> int:
    """`show [TASK]`: one task (default: the task directory given)."""
    name = args.task
    if name is None and target.task is not None and target.task.runnable:
        name = target.task.ref_name
    if name is None:
        raise ValueError("name the task to show (as `repype store ls` lists it), or give its task directory")
    document = task_document(target.store.task(name))
    print(json.dumps(document, indent=2, default=str) if args.json else format_task(document))
    return 0


def run_explain(target: Target, args: argparse.Namespace) -> int:
    """`explain TASK INPUT FIELD`: the derivation tree of one stored value."""
    view = target.store.task(args.task)
    matches = [input_id for input_id in view.input_ids if str(input_id) == args.input]
    if not matches:
        raise KeyError(f"task '{view.name}' has no input {args.input} (inputs: {', '.join(map(str, view.input_ids))})")
    explanation = view.explain(matches[0], args.field)
    text = json.dumps(dataclasses.asdict(explanation), indent=2, default=str)
    print(text if args.json else format_explanation(explanation))
    return 0


def _views(target: Target) -> list[Any]:
    names = target.tasks()
    if not names:
        below = f" at or below '{target.prefix}'" if target.prefix else ""
        raise StoreError(f"no tasks in the store {target.store.url}{below}")
    return [target.store.task(name) for name in names]


def run_table(target: Target, args: argparse.Namespace) -> int:
    """`table [--field F]... [--config K]... [--csv FILE]`: a readable table (and CSV)."""
    frame = results_table(_views(target), _names(args.field), _names(args.config))
    if args.csv == "-":
        print(frame.to_csv(index=False), end="")
        return 0
    with _pandas_display():
        print(frame.to_string(index=False))
    if args.csv:
        frame.to_csv(args.csv, index=False)
        print(f"wrote {len(frame)} row(s) to {args.csv}", file=sys.stderr)
    return 0


def _names(values: list[str] | None) -> list[str] | None:
    """Repeated or comma-separated names as one list (None when none were given)."""
    if values is None:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _pandas_display() -> Any:
    import pandas

    return pandas.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 60)


def run_plot(target: Target, args: argparse.Namespace) -> int:
    """`plot --x K --y F [--by K] [--out FILE]`: writes a PNG."""
    from repype.plot import plot_table

    views = _views(target)
    known = {path for view in views for path in flatten_config(view.config)}
    columns = [column for column in dict.fromkeys((args.x, args.y, args.by)) if column]
    names = sorted(known | {field for view in views for field in view.fields} | {"task", "input_id"})
    for column in columns:
        if column not in names:
            match = difflib.get_close_matches(column, names, n=1)
            hint = f"; did you mean '{match[0]}'?" if match else ""
            raise ValueError(f"no hyperparameter or field '{column}' in the tasks{hint} (known: {names})")
    config = [column for column in columns if column in known]
    fields = [column for column in columns if column not in known and column not in ("task", "input_id")]
    frame = results_table(views, fields, config)
    figure = plot_table(frame, args.x, args.y, by=args.by, title=target.store.url)
    figure.savefig(args.out)
    series = frame[args.by].nunique(dropna=False) if args.by else 1
    points = sum(len(collection.get_offsets()) for collection in figure.axes[0].collections)
    print(f"wrote {args.out}: {args.y} against {args.x}, {series} series, {points} point(s)")
    return 0


RUNNERS = {
    "ls": run_ls,
    "du": run_du,
    "verify": run_verify,
    "gc": run_gc,
    "show": run_show,
    "explain": run_explain,
    "table": run_table,
    "plot": run_plot,
}
