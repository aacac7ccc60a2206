"""Batches and the command line, end to end on real task trees (tasks run in child processes)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import subprocess
import sys

import pytest
from catalogue import as_pattern, catalogue
from taskstages import COUNTS_ENV, read_counts
from tasktree import PIPELINE, write_tree

from repype.batch import Batch, RunContext

RUNNING = catalogue("While running")

TESTS_DIR = pathlib.Path(__file__).parent


@pytest.fixture
def counts(tmp_path, monkeypatch) -> pathlib.Path:
    path = tmp_path / "counts.txt"
    monkeypatch.setenv(COUNTS_ENV, str(path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    return path


def sweep(root: pathlib.Path, fail_on=None) -> pathlib.Path:
    pipeline = [*PIPELINE, "taskstages.Fail"] if fail_on is not None else PIPELINE
    config = {"load": {"size": 8}}
    if fail_on is not None:
        config["fail"] = {"fail_on": fail_on}
    write_tree(
        root,
        {
            "": {"runnable": False, "pipeline": pipeline, "input_ids": [1, 2], "config": config},
            "a": {"runnable": True},
            "a/deeper": {"config": {"threshold": {"threshold": 0.1}}},
            "b": {"runnable": True, "config": {"threshold": {"threshold": 0.9}}},
        },
    )
    return root


def repype_cli(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "repype", *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=240,
        env={**os.environ, "REPYPE_CLI_INTERMEDIATE": "0"},
    )


def test_batch_loads_tree_and_links_parents(tmp_path):
    root = sweep(tmp_path / "tree")
    batch = Batch()
    batch.load(root)
    assert len(batch.tasks) == 4
    deeper = batch.task(root / "a" / "deeper")
    assert deeper.parent is batch.task(root / "a")
    assert deeper.parent.parent is batch.task(root)
    assert [context.task.path.name for context in batch.contexts] == ["a", "deeper", "b"]
    assert isinstance(batch.context(root / "b"), RunContext)
    assert batch.context(root) is None  # not runnable
    with pytest.raises(ValueError, match="differs"):
        batch.task(root / "b", {"runnable": False})


def test_batch_run_in_child_processes_then_nothing_pending(tmp_path, counts):
    root = sweep(tmp_path / "tree")
    batch = Batch()
    batch.load(root)
    assert [context.pending for context in batch.pending] == ["incomplete"] * 3
    assert asyncio.run(batch.run()) is True
    assert batch.pending == []
    # load ran once per input for the three tasks together: siblings and children reuse it
    assert read_counts(counts)["load"] == 2
    assert read_counts(counts)["threshold"] == 6


def test_batch_stops_at_first_failure(tmp_path, counts):
    root = sweep(tmp_path / "tree", fail_on=2)
    batch = Batch()
    batch.load(root)
    assert asyncio.run(batch.run()) is False
    assert len(batch.pending) == 3
    assert read_counts(counts)["fail"] == 2  # the first task ran both inputs, then the batch stopped


def test_cli_dry_run_run_and_reset(tmp_path, counts):
    root = sweep(tmp_path / "tree")
    dry = repype_cli(str(root))
    assert dry.returncode == 0, dry.stderr
    assert "3 task(s) selected" in dry.stdout
    assert "incomplete" in dry.stdout and "a/deeper" in dry.stdout
    assert "--run" in dry.stdout
    assert not (root / ".repype").exists() or read_counts(counts)["load"] == 0

    done = repype_cli(str(root), "--run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_counts(counts)["load"] == 2
    executed = sum(read_counts(counts).values())
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("Batch finished in ") and "3 task(s) completed, 0 failed;" in summary
    assert f"{executed} stage execution(s) run, {3 * 2 * 4 - executed} reused from the store" in summary
    assert "0 task(s) selected" in repype_cli(str(root)).stdout

    (root / "b" / "task.yml").write_text("runnable: true\nconfig: {threshold: {threshold: 0.8}}\n")
    plan = repype_cli(str(root))
    assert "specification" in plan.stdout and "1 task(s) selected" in plan.stdout
    assert "reused from the store" in plan.stdout

    refused = repype_cli(str(root), "--reset", "--task", str(root / "a"), input="7\n")
    assert refused.returncode == 1
    reset = repype_cli(str(root), "--reset", "--task", str(root / "a"), "--task", str(root / "b"), input="2\n")
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert not (root / "a" / ".sha.json").exists()
    after = repype_cli(str(root))
    assert "2 task(s) selected" in after.stdout


def test_cli_task_dir_selection_and_failure_exit_code(tmp_path, counts):
    root = sweep(tmp_path / "tree", fail_on=1)
    failed = repype_cli(str(root), "--run", "--task-dir", str(root / "a"))
    assert failed.returncode == 1
    assert "fail" in failed.stdout and "failing on purpose" in failed.stdout
    assert "Error in stage 'fail' on input 1 of task" in failed.stdout
    assert re.search(as_pattern(RUNNING["failing-stage"]), failed.stdout)
    assert failed.stdout.count("Traceback") == 1  # the stage's own traceback, once
    assert "0 task(s) completed, 1 failed, 1 not started;" in failed.stdout.strip().splitlines()[-1]


def test_cli_store_commands(tmp_path, counts):
    root = sweep(tmp_path / "tree")
    assert repype_cli(str(root), "--run").returncode == 0
    store = str(root / ".repype")
    ls = repype_cli("store", "ls", store)
    assert ls.returncode == 0, ls.stderr
    assert "a/deeper" in ls.stdout and "b" in ls.stdout
    du = repype_cli("store", "du", store)
    assert du.returncode == 0 and "dedup" in du.stdout.lower()
    verify = repype_cli("store", "verify", store)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    gc = repype_cli("store", "gc", store, "--grace", "0")
    assert gc.returncode == 0 and "dry run" in gc.stdout.lower()
    # Damage a stage record (the tiny values are packed into records): verify reports it and exits non-zero
    record = next((root / ".repype" / "records").glob("*/*/zarr.json"))
    record.write_bytes(record.read_bytes()[:-20])
    damaged = repype_cli("store", "verify", store)
    assert damaged.returncode == 1
    missing = repype_cli("store", "ls", str(tmp_path / "nope"))
    assert missing.returncode != 0 and "nope" in missing.stderr


# --- selections, summaries and one-line errors (in process: console_main is the console script) ----


def cli(capsys, *args: str) -> tuple[int, str, str]:
    from repype.cli import console_main

    code = console_main([*args])
    out, err = capsys.readouterr()
    return code, out, err


def test_selections_that_name_nothing_are_usage_errors(tmp_path, capsys, monkeypatch):
    root = sweep(tmp_path / "tree")
    (root / "empty-folder").mkdir()
    cases = {
        "--task": [str(root / "c")],  # no such task
        "--task-dir": [str(root / "empty-folder")],  # a folder without runnable tasks
    }
    for option, (path,) in cases.items():
        code, out, err = cli(capsys, str(root), option, path)
        assert code == 2 and path in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli(capsys, str(root), "--task", str(root))  # the root is not runnable
    assert code == 2 and "not runnable" in err
    code, _, err = cli(capsys, str(root), "--task", str(root / "c"))
    assert re.match(as_pattern(RUNNING["selection"]), err)
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(capsys, "tree", "--task", "a/deeper")  # relative to the tree's root
    assert code == 0 and "1 task(s) selected" in out and "a/deeper" in out
    code, out, _ = cli(capsys, "tree", "--task", "tree/b")  # relative to the current directory
    assert code == 0 and "1 task(s) selected" in out
    (tmp_path / "nothing").mkdir()
    code, _, err = cli(capsys, str(tmp_path / "nothing"))
    assert code == 2 and "no task.yml" in err


def test_dry_run_ends_with_a_summary(tmp_path, capsys, counts):
    root = sweep(tmp_path / "tree")
    code, out, _ = cli(capsys, str(root))
    assert code == 0 and out.splitlines()[-2] == "3 task(s) to run, 0 up to date"
    assert cli(capsys, str(root), "--run", "--task", str(root / "b"))[0] == 0
    code, out, _ = cli(capsys, str(root))
    assert "2 task(s) to run, 1 up to date" in out


def test_a_folder_without_task_yml_inside_a_tree_is_named(tmp_path, capsys):
    root = sweep(tmp_path / "tree")
    (root / "a" / "task.yml").unlink()
    code, _, err = cli(capsys, str(root))
    assert code == 1 and f"folder {root / 'a'} has no task.yml" in err and len(err.strip().splitlines()) == 1
    assert re.match(as_pattern(RUNNING["folder-without-task-yml"]), err)


def test_batch_load_skips_dot_directories_and_stores(tmp_path, counts):
    root = sweep(tmp_path / "tree")
    (root / "task.yml").write_text((root / "task.yml").read_text() + "store: results\n")
    for hidden in (root / ".git" / "x", root / "results" / "y", root / ".repype" / "z"):
        hidden.mkdir(parents=True)
        (hidden / "task.yml").write_text("runnable: true\n")
    batch = Batch()
    batch.load(root)
    assert sorted(path.relative_to(root).as_posix() for path in batch.tasks) == [".", "a", "a/deeper", "b"]


def test_reset_without_a_terminal_and_with_yes(tmp_path, capsys, counts, monkeypatch):
    root = sweep(tmp_path / "tree")
    assert cli(capsys, str(root), "--run")[0] == 0

    def closed_stdin(prompt=""):
        raise EOFError

    monkeypatch.setattr("builtins.input", closed_stdin)
    code, out, err = cli(capsys, str(root), "--reset")
    assert code == 1 and "--yes" in out and "Traceback" not in out + err
    assert RUNNING["reset-without-terminal"] in out
    assert (root / "b" / ".sha.json").exists()
    code, out, _ = cli(capsys, str(root), "--reset", "--yes", "--task", str(root / "b"))
    assert code == 0 and "1 task(s) reset" in out and not (root / "b" / ".sha.json").exists()


def test_usage_errors_exit_2(tmp_path, capsys):
    root = sweep(tmp_path / "tree")
    with pytest.raises(SystemExit) as exit_info:
        cli(capsys, str(root), "--run", "--jobs", "0")
    assert exit_info.value.code == 2 and "at least 1" in capsys.readouterr().err


def test_user_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    root = sweep(tmp_path / "tree")
    (root / "b" / "task.yml").write_text('runnable: true\ninput_ids: "5-3"\n')
    code, _, err = cli(capsys, str(root))
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1 and "5-3" in err
    code, _, err = cli(capsys, str(root), "--debug")
    assert code == 1 and "Traceback" in err


def test_output_piped_into_head_is_not_a_traceback(tmp_path, counts):
    root = sweep(tmp_path / "tree")
    command = f'"{sys.executable}" -m repype "{root}" | head -1'
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


SLOW_STAGE = """
import os
import time

from repype.stage import Stage


class Slow(Stage):
    inputs = ("input_id",)
    outputs = ("x",)

    def process(self, input_id, pipeline, config, status=None):
        with open(os.path.join(os.path.dirname(__file__), "pid"), "w") as file:
            file.write(str(os.getpid()))
        time.sleep(120)
        return {"x": 1}
"""


def test_sigterm_stops_the_run_and_its_task_process(tmp_path):
    import signal
    import time

    root = tmp_path / "tree"
    root.mkdir()
    (root / "slowstage.py").write_text(SLOW_STAGE)
    (root / "task.yml").write_text("runnable: true\npipeline: [slowstage.Slow]\ninput_ids: [1]\n")
    run = subprocess.Popen(
        [sys.executable, "-m", "repype", str(root), "--run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "REPYPE_CLI_INTERMEDIATE": "0"},
    )
    deadline = time.monotonic() + 60
    while not (root / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int((root / "pid").read_text())
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 130, out + err
    assert "Traceback" not in out + err and err.strip() == RUNNING["sigterm"]
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the task's process is gone too
