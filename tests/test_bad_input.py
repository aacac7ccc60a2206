"""Bad input on the command line: each case gives one line naming the culprit, a non-zero exit, and changes nothing.

Every case runs `repype TREE` (a dry run) or `repype TREE --run` on a fresh tree with one broken
`task.yml`, and compares the files of the tree (the store included) before and after.
"""

from __future__ import annotations

import pathlib
import re

import pytest
import yaml
from catalogue import as_pattern, catalogue
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


SPECS = {
    "runnable-not-bool": {"runnable": "no"},
    "config-not-mapping": {"config": 3},
    "pipeline-not-paths": {"pipeline": [1, 2]},
    "module-as-stage": {"pipeline": ["taskstages"]},
    "stage-as-pipeline": {"pipeline": "taskstages.Load"},
    "scopes-not-mapping": {"scopes": 5},
    "duplicate-stage-ids": {"pipeline": [*PIPELINE, "taskstages.Load"]},
    "cyclic-pipeline": {"pipeline": ["cycle.Ping", "cycle.Pong"]},
    "reversed-range": {"input_ids": "5-3"},
    "input-ids-mapping": {"input_ids": {"a": 1}},
    "float-input-id": {"input_ids": [1.5]},
    "storage-options-text": {"storage_options": "abc"},
    "unknown-protocol": {"store": "nosuch://bucket"},
    "unknown-marginal-module": {"marginal_stages": ["nowhere.Stage"]},
}
"""The `task.yml` of the child task for each row of the catalogue's bad specifications."""
BAD_SPECS = catalogue("Bad task specifications")


def test_the_catalogue_lists_every_case():
    assert set(BAD_SPECS) == set(SPECS)
    checked_elsewhere = {  # each checked against its row by a test of the module named here
        "failing-stage": "test_batch_cli",
        "selection": "test_batch_cli",
        "folder-without-task-yml": "test_batch_cli",
        "reset-without-terminal": "test_batch_cli",
        "sigterm": "test_batch_cli",
        "s3-hung-or-gone": "test_s3_faults",
        "task-process-error": "test_bad_input",
    }
    assert set(catalogue("While running")) == set(checked_elsewhere)


@pytest.mark.parametrize("case", sorted(SPECS))
@pytest.mark.parametrize("run", [False, True], ids=["dry-run", "run"])
def test_bad_spec_is_one_line_and_changes_nothing(tmp_path, capsys, monkeypatch, case, run):
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parent))
    root = tree(tmp_path, SPECS[case])
    before = snapshot(root)
    code = console_main([str(root), *(["--run"] if run else [])])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert err.count("\n") == 1 and re.fullmatch(as_pattern(BAD_SPECS[case]), err.strip()), (BAD_SPECS[case], err)
    assert f"task {root / 'child'}: " in err  # names the task
    assert "Traceback" not in out + err
    assert snapshot(root) == before


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
            assert re.search(as_pattern(catalogue("While running")["task-process-error"]), out)
            assert len([line for line in out.splitlines() if "Error" in line]) == 1
