"""Bad input on the command line: each case gives one line naming the culprit, a non-zero exit, and changes nothing.

Every case runs `repype TREE` (a dry run) or `repype TREE --run` on a fresh tree with one broken
`task.yml`, and compares the files of the tree (the store included) before and after.
"""

from __future__ import annotations

import pathlib

import pytest
import yaml
from tasktree import PIPELINE

import repype.cli
from repype.cli import console_main
from repype.task import Task

CYCLE = """
from repype.stage import Stage


class Ping(Stage):
    inputs = ("pong",)
    outputs = ("ping",)


class Pong(Stage):
    inputs = ("ping",)
    outputs = ("pong",)
"""


def snapshot(root: pathlib.Path) -> dict[str, tuple[int, int]]:
    return {
        path.relative_to(root).as_posix(): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def tree(tmp_path: pathlib.Path, child: dict) -> pathlib.Path:
    root = tmp_path / "tree"
    (root / "child").mkdir(parents=True)
    (root / "cycle.py").write_text(CYCLE)
    base = {"runnable": False, "pipeline": PIPELINE, "input_ids": [1, 2], "config": {"load": {"size": 4}}}
    (root / "task.yml").write_text(yaml.safe_dump(base))
    (root / "child" / "task.yml").write_text(yaml.safe_dump({"runnable": True, **child}))
    return root


CASES = {
    "runnable is a string": ({"runnable": "no"}, "'runnable' must be true or false, not 'no' (str)"),
    "config is a number": ({"config": 3}, "'config' must be a mapping of stage ids to hyperparameters, not 3"),
    "pipeline of numbers": ({"pipeline": [1, 2]}, "'pipeline' must be a dotted path or a list of dotted paths"),
    "a module as a stage": ({"pipeline": ["taskstages"]}, "'taskstages' is a module, not a Stage subclass"),
    "a stage as the pipeline": ({"pipeline": "taskstages.Load"}, "is a class Load, not a Pipeline subclass"),
    "scopes is a number": ({"scopes": 5}, "'scopes' must be a mapping of scope names to path patterns, not 5"),
    "duplicate stage ids": ({"pipeline": [*PIPELINE, "taskstages.Load"]}, "Ambiguous stage identifiers: ['load']"),
    "a cyclic pipeline": ({"pipeline": ["cycle.Ping", "cycle.Pong"]}, "Failed to resolve the order of stages"),
    "a reversed range": ({"input_ids": "5-3"}, 'malformed range "5-3"'),
    "input ids as a mapping": ({"input_ids": {"a": 1}}, "'input_ids' must be a list of ints and strings"),
    "a float input id": ({"input_ids": [1.5]}, "'input_ids' must be a list of ints and strings"),
    "storage options as text": ({"storage_options": "abc"}, "'storage_options' must be a mapping"),
    "an unknown store protocol": ({"store": "nosuch://bucket"}, "unknown protocol 'nosuch'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("run", [False, True], ids=["dry-run", "run"])
def test_bad_spec_is_one_line_and_changes_nothing(tmp_path, capsys, monkeypatch, case, run):
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parent))
    child, message = CASES[case]
    root = tree(tmp_path, child)
    before = snapshot(root)
    code = console_main([str(root), *(["--run"] if run else [])])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert err.count("\n") == 1 and err.startswith("repype: ") and message in err, err
    assert "child" in err  # names the task
    assert "Traceback" not in out + err
    assert snapshot(root) == before


def test_an_unknown_marginal_stage_module_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parent))
    root = tree(tmp_path, {"marginal_stages": ["nowhere.Stage"]})
    monkeypatch.setenv("PYTHONPATH", str(pathlib.Path(__file__).parent))
    assert console_main([str(root), "--run"]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [  # found by the plan, before anything runs
        f"repype: task {root / 'child'}: 'marginal_stages': cannot import 'nowhere.Stage': no module named 'nowhere'"
    ], out + err
    assert "Traceback" not in out + err and not (root / ".repype").exists()


class BrokenTask(Task):
    """A task whose run fails outside any stage, in the task's own process."""

    def run(self, *args, **kwargs):
        raise ValueError(f"task {self.path}: something outside the stages is wrong")


def test_an_error_in_the_task_process_is_one_line_and_debug_shows_its_traceback(tmp_path, capsys, monkeypatch):
    tests = str(pathlib.Path(__file__).parent)
    monkeypatch.syspath_prepend(tests)
    root = tree(tmp_path, {})
    for debug in (False, True):
        assert repype.cli.run_cli_ex(root, run=True, task_cls=BrokenTask, debug=debug) is False
        out = capsys.readouterr().out
        assert f"Error of task {root / 'child'}" in out and "something outside the stages is wrong" in out
        assert ("Traceback" in out) is debug
        if not debug:
            assert len([line for line in out.splitlines() if "Error" in line]) == 1
