"""Parallel batches: one executor for the whole batch, each distinct stage execution once, exactly as planned."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from taskstages import COUNTS_ENV, count, read_counts
from tasktree import PIPELINE, write_tree
from test_plan import load, marginal_tree, run_here, sweep_3x3
from test_task import assert_data_equal

import repype.status
from repype.batch import Batch
from repype.executor import DaskExecutor, ProcessExecutor

TESTS_DIR = pathlib.Path(__file__).parent


@pytest.fixture(scope="module")
def dask_cluster():
    with DaskExecutor(workers=2) as executor:
        yield executor


def _set_environment(name: str, value: str) -> None:
    os.environ[name] = value


@pytest.fixture(params=["jobs", "dask"])
def executor(request, counts):
    if request.param == "dask":  # the cluster outlives the test: its workers count into this test's file
        cluster = request.getfixturevalue("dask_cluster")
        cluster.client.run(_set_environment, COUNTS_ENV, str(counts))
        yield cluster
        return
    with ProcessExecutor(2) as workers:
        yield workers


def run_parallel(batch: Batch, executor, contexts=None, status=None) -> bool:
    contexts = batch.pending if contexts is None else contexts
    plan = batch.plan(contexts, parallel=True)
    return asyncio.run(batch.run(contexts, status=status, executor=executor, plan=plan))


def assert_exact(batch: Batch, counts: pathlib.Path, executor, contexts) -> None:
    plan = batch.plan(contexts, parallel=True)
    before = read_counts(counts)
    assert run_parallel(batch, executor, contexts)
    ran = read_counts(counts) - before
    assert ran == plan.runs_by_stage()
    assert sum(ran.values()) == plan.to_run


@pytest.mark.parametrize("tree", [sweep_3x3, marginal_tree])
def test_planned_counts_equal_executions_for_a_fresh_a_half_filled_and_a_full_store(tmp_path, counts, executor, tree):
    root = tree(tmp_path / "tree")
    batch = load(root)
    fresh = batch.plan(parallel=True)
    assert_exact(batch, counts, executor, batch.pending[::2])  # half of the tasks run ...
    half = load(root)
    assert half.plan(parallel=True).to_run < fresh.to_run
    assert_exact(half, counts, executor, half.pending)  # ... then the rest
    full = load(root)
    assert full.pending == []
    assert_exact(full, counts, executor, full.contexts)  # everything again: reused, recomputing unstored values
    sequential = tree(tmp_path / "sequential")
    run_here(load(sequential).pending)
    for context in load(root).contexts:
        twin = load(sequential).context(sequential / context.task.ref_name)
        assert_data_equal(context.task.load(), twin.task.load())


def count_start(stage, **_) -> None:
    """A `start` callback that counts the stage's executions into the counts file, in any process."""
    count(stage.id, "?")


def test_the_bundled_example_runs_what_its_parallel_plan_says(example, counts, executor):
    def counted(batch: Batch, contexts=None):
        contexts = batch.pending if contexts is None else contexts
        for context in contexts:
            for stage in context.pipeline.stages:
                stage.add_callback("start", count_start)
        return contexts

    half = load(example)
    assert_exact(half, counts, executor, counted(half, [c for c in half.pending if c.task.ref_name == "sigma=3"]))
    rest = load(example)
    assert_exact(rest, counts, executor, counted(rest))
    full = load(example)
    assert full.pending == []
    assert_exact(full, counts, executor, counted(full, full.contexts))
    assert sum(read_counts(counts).values()) == 90


def test_a_sweep_runs_each_shared_execution_once(tmp_path, counts, executor):
    root = sweep_3x3(tmp_path / "tree")
    assert run_parallel(load(root), executor)
    assert read_counts(counts) == {"load": 4, "scale": 12, "threshold": 36, "summarize": 36}
    assert load(root).pending == []  # every manifest is written


def failing_tree(root: pathlib.Path) -> pathlib.Path:
    write_tree(
        root,
        {
            "": {"pipeline": [*PIPELINE, "taskstages.Fail"], "input_ids": [1, 2, 3], "config": {"load": {"size": 32}}},
            "bad": {"runnable": True, "config": {"fail": {"fail_on": 2}}},
            "good": {"runnable": True, "config": {"threshold": {"threshold": 0.3}}},
        },
    )
    return root


def test_a_failing_task_names_task_stage_and_input_and_the_others_complete(tmp_path, counts, executor):
    root = failing_tree(tmp_path / "tree")
    events: list = []
    with repype.status.create() as status:
        status.subscribe(lambda update: events.append(update))
        assert not run_parallel(load(root), executor, status=status)
    errors = [event for event in events if isinstance(event, dict) and event.get("info") == "error"]
    assert len(errors) == 1
    error = errors[0]
    assert (error["task"], error["stage"], error["input_id"]) == (str(root / "bad"), "fail", 2)
    assert "failing on purpose for input 2" in error["traceback"]
    finished = [event for event in events if isinstance(event, dict) and event.get("info") == "finished"]
    assert (finished[-1]["completed"], finished[-1]["failed"]) == (1, 1)
    assert [context.task.ref_name for context in load(root).pending] == ["bad"]
    before = read_counts(counts)
    (root / "bad" / "task.yml").write_text("runnable: true\nconfig: {fail: {fail_on: null}}\n")
    assert run_parallel(load(root), executor)
    ran = read_counts(counts) - before
    assert ran == {"fail": 3}  # every other execution of the failed task was recorded by the failed run


def test_task_run_with_an_executor_raises_the_stage_error(tmp_path, counts):
    task = write_tree(
        tmp_path,
        {
            "": {
                "runnable": True,
                "pipeline": [*PIPELINE, "taskstages.Fail"],
                "input_ids": [1, 2],
                "config": {"fail": {"fail_on": 1}},
            }
        },
    )[""]
    from repype.pipeline import StageError

    with pytest.raises(StageError, match="failing on purpose for input 1") as info:
        task.run(task.create_config(), executor=2)
    assert info.value.stage.id == "fail" and info.value.input_id == 1


SIBLINGS = 6
"""Siblings of the sleepy sweep: enough that several are still running when the first completes."""


def sleepy_sweep(root: pathlib.Path, siblings: int = SIBLINGS) -> pathlib.Path:
    specs = {"": {"pipeline": [*PIPELINE, "taskstages.Sleep"], "input_ids": [1, 2], "config": {"load": {"size": 32}}}}
    for index in range(siblings):  # staggered sleeps: the tasks complete one after the other
        specs[f"s{index}"] = {"runnable": True, "config": {"sleep": {"seconds": 0.5 + index * 0.3}}}
    write_tree(root, specs)
    return root


def repype_cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "repype", *args], env=env, text=True, **kwargs)


@pytest.mark.parametrize(
    "workers", [["--jobs", "2"], pytest.param(["--dask"], marks=pytest.mark.slow)], ids=["jobs", "dask"]
)
def test_killing_a_parallel_batch_keeps_completed_tasks_and_a_rerun_finishes_the_rest(tmp_path, counts, workers):
    root = sleepy_sweep(tmp_path / "tree", siblings=SIBLINGS)
    fresh = load(root).plan(parallel=True).to_run
    process = repype_cli(str(root), "--run", *workers, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not any((root / f"s{index}" / ".sha.json").exists() for index in range(SIBLINGS)):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    first = read_counts(counts)
    batch = load(root)
    completed = [context for context in batch.contexts if not context.pending]
    assert 1 <= len(completed) < SIBLINGS
    for context in completed:
        assert len(context.task.load()) == 2
    rest = batch.plan(parallel=True).to_run
    assert sum(first.values()) <= fresh - rest + 2  # at most the two running executions were lost
    rerun = repype_cli(str(root), "--run", *workers, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, out + err
    assert sum((read_counts(counts) - first).values()) == rest
    assert load(root).pending == []


@pytest.mark.parametrize("workers", [["--jobs", "2"], ["--dask"]], ids=["jobs", "dask"])
def test_the_command_line_runs_a_sweep_in_parallel(tmp_path, counts, workers):
    root = sweep_3x3(tmp_path / "tree")
    process = repype_cli(str(root), "--run", *workers, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, out + err
    assert read_counts(counts) == {"load": 4, "scale": 12, "threshold": 36, "summarize": 36}
    assert load(root).pending == []
    assert "9 task(s) completed" in out


def test_dask_task_keys_name_the_stages(tmp_path, counts, dask_cluster):
    dask_cluster.client.run(_set_environment, COUNTS_ENV, str(counts))
    root = sweep_3x3(tmp_path / "tree")
    assert run_parallel(load(root), dask_cluster)
    prefixes = dask_cluster.client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert {"load", "scale", "threshold", "summarize"} <= set(prefixes)


def test_the_dry_run_with_jobs_prints_the_parallel_plan_as_json(tmp_path, capsys, counts):
    import jsonschema
    from test_plan import cli, documented_schema

    root = marginal_tree(tmp_path / "tree")
    code, out, _ = cli(capsys, str(root), "--json", "--jobs", "2")
    assert code == 0
    document = json.loads(out)
    jsonschema.validate(document, documented_schema())
    parallel, sequential = load(root).plan(parallel=True), load(root).plan()
    assert document["totals"]["to_run"] == parallel.to_run
    assert document["totals"]["by_stage"] == dict(sorted(parallel.runs_by_stage().items()))
    assert parallel.run == sequential.run  # the same distinct executions; recomputations may differ


def test_a_store_that_lives_in_this_process_is_refused_before_anything_runs(tmp_path, counts):
    spec = {"runnable": True, "pipeline": PIPELINE, "input_ids": [1], "store": f"memory://graph-{tmp_path.name}"}
    task = write_tree(tmp_path, {"": spec})[""]
    with pytest.raises(ValueError, match=r"task .*: the store memory://graph-.* lives in this process only"):
        task.run(task.create_config(), executor=2)
    assert read_counts(counts) == {}


def test_a_plan_of_other_tasks_is_refused(tmp_path, counts):
    batch = load(sweep_3x3(tmp_path / "tree"))
    plan = batch.plan(batch.pending[:2], parallel=True)
    with pytest.raises(ValueError, match="the plan is for the tasks"):
        asyncio.run(batch.run(batch.pending[1:3], executor=2, plan=plan))
    assert read_counts(counts) == {}
