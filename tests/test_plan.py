"""The batch plan: each distinct stage execution once, exactly what then runs (fresh, half-filled, full store)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import warnings
from collections import Counter

import jsonschema
import pytest
from taskstages import COUNTS_ENV, read_counts
from tasktree import PIPELINE, write_tree

import repype.runner
import repype.status
from repype.batch import Batch, RunContext
from repype.cli import batch_main
from repype.plan import Plan, is_planned
from repype.store import IntegrityWarning, layout

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
FACTORS = (1.0, 2.0, 4.0)
THRESHOLDS = (0.3, 0.5, 0.7)


@pytest.fixture
def counts(tmp_path, monkeypatch) -> pathlib.Path:
    path = tmp_path / "counts.txt"
    monkeypatch.setenv(COUNTS_ENV, str(path))
    return path


def sweep_3x3(root: pathlib.Path) -> pathlib.Path:
    """Nine leaf tasks: three factors of `scale` (the shared prefix), three thresholds under each.

    Factors and thresholds are chosen so that no two leaves produce the same mask (no early cutoff).
    """
    specs: dict[str, dict] = {"": {"pipeline": PIPELINE, "input_ids": [1, 2, 3, 4], "config": {"load": {"size": 256}}}}
    for factor in FACTORS:
        specs[f"f={factor}"] = {"config": {"scale": {"factor": factor}}}
        for threshold in THRESHOLDS:
            specs[f"f={factor}/t={threshold}"] = {"runnable": True, "config": {"threshold": {"threshold": threshold}}}
    write_tree(root, specs)
    return root


def marginal_tree(root: pathlib.Path) -> pathlib.Path:
    """Disabled stages, a marginal stage whose outputs later tasks need again, and a consumed field."""
    pipeline = ["taskstages.Load", "taskstages.Side", *PIPELINE[1:]]
    write_tree(
        root,
        {
            "": {"pipeline": pipeline, "input_ids": [1, 2, 3], "config": {"load": {"size": 32}}},
            "m": {"runnable": True, "marginal_stages": ["scale"], "config": {"side": {"enabled": False}}},
            "m/t": {"config": {"threshold": {"threshold": 0.3}}},
            "n": {"runnable": True, "config": {"threshold": {"threshold": 0.3}}},
            "o": {
                "runnable": True,
                "pipeline": [*pipeline[:4], "taskstages.Consume"],
                "config": {"threshold": {"threshold": 0.7}},
            },
        },
    )
    return root


def load(root: pathlib.Path) -> Batch:
    batch = Batch()
    batch.load(root)
    return batch


def run_here(contexts: list[RunContext]) -> None:
    """What a sequential batch does with each context, in order, without the child processes."""
    for context in contexts:
        context.run(return_data=False)


def assert_exact(plan: Plan, counts: pathlib.Path, contexts: list[RunContext]) -> None:
    """Runs `contexts` and checks that each stage ran exactly as often as `plan` announced."""
    before = read_counts(counts)
    run_here(contexts)
    ran = read_counts(counts) - before
    assert plan.runs_by_stage() == ran
    assert plan.to_run == sum(ran.values())


@pytest.mark.parametrize("tree", [sweep_3x3, marginal_tree])
def test_planned_counts_equal_executions_for_a_fresh_a_half_filled_and_a_full_store(tmp_path, counts, tree):
    root = tree(tmp_path / "tree")
    batch = load(root)
    fresh = batch.plan()
    first = batch.pending[::2]
    assert_exact(batch.plan(first), counts, first)  # half of the tasks run ...
    half = load(root)
    plan = half.plan()
    assert plan.reused > 0 and plan.to_run < fresh.to_run
    assert_exact(plan, counts, half.pending)  # ... then the rest
    full = load(root)
    assert full.pending == [] and full.plan().to_run == 0
    everything = full.plan(full.contexts)  # re-running complete tasks: every distinct execution is reused ...
    assert everything.run == 0 and everything.reused == fresh.run
    assert_exact(everything, counts, full.contexts)  # ... and values kept but never stored are recomputed


def test_a_fresh_sweep_plans_each_shared_execution_once(tmp_path, counts):
    root = sweep_3x3(tmp_path / "tree")
    plan = load(root).plan()
    assert plan.runs_by_stage() == {"load": 4, "scale": 12, "threshold": 36, "summarize": 36}
    assert plan.to_run == 88 and plan.reused == 0
    assert plan.shared == 4 + 12  # load for all nine tasks, each scale for three
    assert sum(task.inputs * task.stages for task in plan.tasks) == 144  # what a per-task count announced
    first, second = plan.tasks[0], plan.tasks[1]
    assert (first.run, first.shared) == (16, 8)
    assert (second.run, dict(second.from_batch)) == (8, {first.task: 8})
    downstream = [ex for ex in plan.executions.values() if ex.stage == "summarize"]
    assert all(any(is_planned(ref) for ref in ex.outputs.values()) for ex in downstream)


def test_the_marginal_tree_counts_recomputations_and_disabled_stages(tmp_path, counts):
    plan = load(marginal_tree(tmp_path / "tree")).plan()
    by_task = {task.task: task for task in plan.tasks}
    assert by_task["m"].disabled == 3 and by_task["n"].disabled == 0
    # m/t's threshold reads `scaled`, which m did not store; n keeps `scaled`, so it stores it anew
    assert by_task["m/t"].recomputations == {"scale": 3}
    assert by_task["n"].recomputations == {"scale": 3}
    assert "3 recomputed (not stored)" in by_task["n"].summary()


def count_executions(contexts: list[RunContext], executed: Counter) -> list[RunContext]:
    for context in contexts:
        for stage in context.pipeline.stages:
            stage.add_callback("start", lambda stage, **_: executed.update([stage.id]))
    return contexts


def test_the_bundled_example_runs_what_its_plan_says(example):
    executed: Counter = Counter()
    fresh = load(example).plan()
    assert fresh.to_run == 90 and fresh.shared == 6 + 12
    half = count_executions([c for c in load(example).pending if c.task.ref_name == "sigma=3"], executed)
    plan = load(example).plan(half)
    run_here(half)
    assert executed == plan.runs_by_stage()
    executed.clear()
    rest = count_executions(load(example).pending, executed)
    plan = load(example).plan(rest)
    assert plan.reused == 12 and plan.to_run == 90 - 24
    assert plan.tasks[0].reused_from == {"sigma=3": 6}
    run_here(rest)
    assert executed == plan.runs_by_stage() and sum(executed.values()) == plan.to_run
    executed.clear()
    full = load(example)
    assert full.pending == []
    everything = count_executions(full.contexts, executed)
    plan = full.plan(everything)  # complete tasks run again: all 90 executions are reused, none runs
    assert (plan.to_run, plan.reused) == (0, 90)
    run_here(everything)
    assert executed == Counter()


def test_recorded_run_times_estimate_the_compute_time(tmp_path, counts):
    root = sweep_3x3(tmp_path / "tree")
    assert load(root).plan().unestimated == 88
    run_here(load(root).pending[:1])
    plan = load(root).plan()
    assert plan.unestimated == 0 and plan.estimated_seconds > 0  # every stage has run once, code unchanged
    assert all(task.estimated_seconds > 0 for task in plan.tasks)


# --- the command line ----------------------------------------------------------------------------


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = batch_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def documented_schema() -> dict:
    readme = (REPOSITORY / "README.md").read_text()
    section = readme[readme.index("### The dry run") :]
    return json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))


def test_json_output_validates_against_the_documented_schema(tmp_path, capsys, counts):
    schema = documented_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    root = marginal_tree(tmp_path / "tree")
    code, out, _ = cli(capsys, str(root), "--json")
    assert code == 0
    fresh = json.loads(out)
    jsonschema.validate(fresh, schema)
    assert fresh["totals"]["to_run"] == load(root).plan().to_run
    run_here(load(root).pending[:1])
    code, out, _ = cli(capsys, str(root), "--json")
    document = json.loads(out)
    jsonschema.validate(document, schema)
    assert document["totals"]["up_to_date"] == 1 and document["totals"]["reused"] > 0
    assert document["tasks"][0]["reused_from"][0]["task"] == "m"
    with pytest.raises(jsonschema.ValidationError):  # the schema can fail
        jsonschema.validate({**document, "totals": {**document["totals"], "run": -1}}, schema)


def test_json_does_not_go_with_run(tmp_path, capsys):
    root = sweep_3x3(tmp_path / "tree")
    with pytest.raises(SystemExit) as exit_info:
        cli(capsys, str(root), "--json", "--run")
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and "--json goes with a dry run or --why" in err and out == ""


def test_the_dry_run_prints_the_plan_per_task_and_in_total(tmp_path, capsys, counts):
    root = sweep_3x3(tmp_path / "tree")
    code, out, _ = cli(capsys, str(root))
    lines = out.splitlines()
    assert code == 0 and lines[-2] == "9 task(s) to run, 0 up to date"
    assert "16 stage executions: 16 to run (8 also for later tasks)" in lines[2]
    assert "88 stage executions to run, 0 reused from the store, 16 shared between tasks" in out
    assert "early cutoff" in out


# --- "picking up from" --------------------------------------------------------------------------


def start_event(context: RunContext) -> dict:
    events: list = []
    status = repype.status.Status()
    status.subscribe(events.append)
    context.run(status=status, return_data=False)
    return next(event for event in events if isinstance(event, dict) and event.get("info") == "start")


def test_picking_up_names_the_task_that_supplies_the_reused_work(tmp_path, counts):
    root = sweep_3x3(tmp_path / "tree")
    batch = load(root)
    contexts = {context.task.ref_name: context for context in batch.contexts}
    assert start_event(contexts["f=1.0/t=0.3"])["pickup"] is None  # nothing to reuse
    sibling = start_event(contexts["f=1.0/t=0.5"])  # its parent never ran: the sibling supplies load and scale
    assert sibling["pickup"] == str((root / "f=1.0" / "t=0.3").resolve()) and sibling["reused"] == 8
    cousin = start_event(contexts["f=2.0/t=0.3"])
    assert cousin["pickup"] in {str((root / "f=1.0" / name).resolve()) for name in ("t=0.3", "t=0.5")}
    assert cousin["reused"] == 4


@pytest.mark.slow
def test_a_batch_run_in_child_processes_runs_what_the_dry_run_announced(tmp_path, capsys, counts, monkeypatch):
    tests_dir = str(pathlib.Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]))
    root = sweep_3x3(tmp_path / "tree")
    assert cli(capsys, str(root), "--run", "--task-dir", str(root / "f=2.0"))[0] == 0
    out = cli(capsys, str(root), "--json")[1]
    announced = json.loads(out)["totals"]
    before = read_counts(counts)
    assert cli(capsys, str(root), "--run")[0] == 0
    ran = read_counts(counts) - before
    assert announced["to_run"] == sum(ran.values()) == 88 - (4 + 4 + 12 + 12)  # f=2.0 ran load and its branch
    assert announced["by_stage"] == dict(ran)


def test_a_damaged_record_is_planned_to_run_again_and_left_for_the_run_to_report(tmp_path, counts, monkeypatch):
    root = sweep_3x3(tmp_path / "tree")
    run_here(load(root).pending[:1])
    done = load(root)
    key = next(ex.identity for ex in done.plan(done.contexts).executions.values() if ex.stage == "scale")
    store = pathlib.Path(done.contexts[0].task.store_url)
    (store / layout.metadata_key(layout.record_path(key))).write_bytes(b'{"zarr_format": 3, "node_')
    monkeypatch.setattr(repype.runner, "_OPEN_STORES", {})  # as a new process would
    batch = load(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = batch.plan()
    assert not [w for w in caught if issubclass(w.category, IntegrityWarning)]
    assert plan.runs_by_stage()["scale"] == 8 + 1  # the damaged one runs again
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_exact(plan, counts, batch.pending)
    assert [key in str(w.message) for w in caught if issubclass(w.category, IntegrityWarning)] == [True]


def test_a_task_adopts_what_the_plan_found_recorded_without_reading_the_records_again(tmp_path, counts):
    from countingstore import counting

    from repype.plan import recorded_of
    from repype.store import layout

    root = sweep_3x3(tmp_path / "tree")
    context = load(root).pending[0]
    run_here([context])
    context.task.reset()
    batch = load(root)
    plan = batch.plan()
    assert plan.tasks[0].reused == 16 and plan.tasks[0].run == 0
    context = batch.pending[0]
    repype.runner._OPEN_STORES.clear()
    before = read_counts(counts)
    with counting() as log:
        context.run(return_data=False, recorded=recorded_of(plan, 0))
    assert read_counts(counts) == before  # nothing ran
    records = layout.record_path("k").split("/")[0] + "/"
    assert [key for key in log.keys("read", "exists") if key.startswith(records)] == [], log.summary()
    assert not load(root).context(context.task.path).pending  # the task is complete again
