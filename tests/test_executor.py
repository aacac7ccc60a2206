"""Inputs fanned out to local worker processes and to a real Dask LocalCluster."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from taskstages import COUNTS_ENV, read_counts
from tasktree import PIPELINE, write_tree
from test_task import assert_data_equal

from repype.executor import DaskExecutor, ProcessExecutor, SequentialExecutor, create_executor
from repype.pipeline import StageError

TESTS_DIR = pathlib.Path(__file__).parent


@pytest.fixture
def counts(tmp_path, monkeypatch) -> pathlib.Path:
    path = tmp_path / "counts.txt"
    monkeypatch.setenv(COUNTS_ENV, str(path))  # inherited by worker processes
    return path


def tree(root: pathlib.Path, **extra):
    spec = {"runnable": True, "pipeline": PIPELINE, "input_ids": [1, 2, 3, "x"], "config": {"load": {"size": 64}}}
    spec.update(extra)
    return write_tree(root, {"": spec})[""]


def run(task, **kwargs):
    return task.run(task.create_config(), task.create_pipeline(), **kwargs)


def test_create_executor_specs():
    assert isinstance(create_executor(None), SequentialExecutor)
    assert isinstance(create_executor(1), SequentialExecutor)
    executor = create_executor(2)
    try:
        assert isinstance(executor, ProcessExecutor) and executor.remote
    finally:
        executor.close()
    same = SequentialExecutor()
    assert create_executor(same) is same
    with pytest.raises(ValueError, match="at least 1"):
        ProcessExecutor(0)


def test_process_workers_write_the_store_and_return_equal_data(tmp_path, counts):
    expected = run(tree(tmp_path / "sequential"))
    before = read_counts(counts)
    task = tree(tmp_path / "parallel")
    data = run(task, executor=2)
    ran = read_counts(counts) - before
    assert ran["load"] == 4 and ran["summarize"] == 4  # every input once, in the workers
    assert_data_equal(data, expected)
    assert task.is_pending(task.create_pipeline(), task.create_config()) == ""
    assert_data_equal(task.load(), expected)
    again = read_counts(counts)
    assert_data_equal(run(task, executor=2), expected)
    assert read_counts(counts) == again  # all reused from the store


def test_worker_failure_names_the_stage_and_keeps_finished_inputs(tmp_path, counts):
    task = tree(tmp_path, pipeline=[*PIPELINE, "taskstages.Fail"], config={"fail": {"fail_on": 2}})
    with pytest.raises(StageError) as info:
        run(task, executor=2)
    assert info.value.stage.id == "fail" and "failing on purpose for input 2" in str(info.value)
    assert task.is_pending(task.create_pipeline(), task.create_config()) == "incomplete"
    before = read_counts(counts)
    task.spec["config"]["fail"]["fail_on"] = None
    run(task, executor=2)
    ran = read_counts(counts) - before
    assert ran["load"] == 0  # loads of every input were recorded by the failed run
    assert ran["fail"] == 4  # its hyperparameters changed: runs again for every input


def test_dask_local_cluster(tmp_path, counts):
    expected = run(tree(tmp_path / "sequential"))
    before = read_counts(counts)
    task = tree(tmp_path / "dask")
    with DaskExecutor(workers=2) as executor:
        data = run(task, executor=executor)
        ran = read_counts(counts) - before
        assert ran["load"] == 4 and ran["threshold"] == 4
        assert_data_equal(data, expected)
        again = read_counts(counts)
        run(task, executor=executor)  # the executor stays usable across runs
        assert read_counts(counts) == again


@pytest.mark.parametrize("workers", [["--jobs", "2"], ["--dask"]], ids=["jobs", "dask"])
def test_cli_fans_inputs_out(tmp_path, counts, workers):
    task = tree(tmp_path / "tree")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "repype", str(task.path), "--run", *workers],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert read_counts(counts)["load"] == 4
    assert task.is_pending(task.create_pipeline(), task.create_config()) == ""
