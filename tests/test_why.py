"""`repype ROOT --why`: which key parts differ from the nearest recorded execution of each stage that re-runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from example import copy_example, run_example
from hypothesis import given, settings
from hypothesis import strategies as st

import repype.store
from repype.batch import Batch
from repype.cli import batch_main
from repype.store import layout
from repype.store.history import executions_by_stage
from repype.why import NO_EXECUTION, differences, why


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The bundled example's sweep (small images), run once; tests change copies of it."""
    root = copy_example(tmp_path_factory.mktemp("why") / "blobs")
    run_example(root)
    return root


@pytest.fixture
def copy(tree, tmp_path):
    """A copy of the run sweep (store included) that a test may edit."""
    return shutil.copytree(tree, tmp_path / "blobs")


def call(capsys, *argv) -> tuple[int, str]:
    code = batch_main([str(arg) for arg in argv])
    out, _ = capsys.readouterr()
    return code, out


def set_config(task_dir, section: str, key: str, value) -> None:
    path = task_dir / "task.yml"
    spec = yaml.safe_load(path.read_text()) or {}
    spec.setdefault("config", {}).setdefault(section, {})[key] = value
    path.write_text(yaml.safe_dump(spec))


def task_why(root, name: str):
    batch = Batch()
    batch.load(root)
    return why(batch.context(root / name), name)


def test_an_edited_hyperparameter_is_named_with_its_old_and_new_value(copy, capsys):
    set_config(copy / "sigma=3" / "threshold=0.6", "segment", "threshold", 0.65)
    code, out = call(capsys, copy, "--why")
    assert code == 0
    assert out.splitlines() == [
        "sigma=3/threshold=0.6:",
        "  stage 'segment' re-runs for all inputs:",
        "    segment/threshold: 0.6 → 0.65",
        "  stage 'measure' re-runs for all inputs:",
        "    field 'mask' differs (produced by stage 'segment', which re-runs because segment/threshold: 0.6 → 0.65)",
    ]
    result = task_why(copy, "sigma=3/threshold=0.6")
    assert [(entry.stage, entry.input_ids) for entry in result.stages] == [
        ("segment", [1, 2, 3, 4, 5, 6]),
        ("measure", [1, 2, 3, 4, 5, 6]),
    ]
    assert all(key is not None for entry in result.stages for key in entry.nearest.values())
    code, out = call(capsys, copy, "--why", "--json")
    (task,) = json.loads(out)["tasks"]
    assert code == 0 and task["task"] == "sigma=3/threshold=0.6"
    assert [(entry["stage"], entry["reasons"]) for entry in task["stages"]] == [
        ("segment", ["segment/threshold: 0.6 → 0.65"]),
        ("measure", [result.stages[1].reasons[0]]),
    ]
    assert [input_id for input_id, _ in task["stages"][0]["nearest"]] == [1, 2, 3, 4, 5, 6]


def test_a_changed_stage_is_named_and_its_change_propagates_to_the_stages_reading_its_outputs(copy):
    stages = copy / "blobstages.py"
    stages.write_text(
        stages.read_text().replace('sigma = config.get("sigma", 1.0)', 'sigma = 1.0 * config.get("sigma", 1.0)')
    )
    done = subprocess.run(
        [sys.executable, "-m", "repype", str(copy), "--why", "--task", str(copy / "sigma=1")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "sigma=1:",
        "  stage 'smooth' re-runs for all inputs:",
        "    code of stage 'smooth' changed",
        "  stage 'segment' re-runs for all inputs:",
        "    field 'smooth' differs (produced by stage 'smooth', which re-runs because code of stage 'smooth' changed)",
        "  stage 'measure' re-runs for all inputs:",
        "    field 'mask' differs (produced by stage 'segment', which re-runs because field 'smooth' differs)",
    ]


def test_inputs_that_disagree_are_listed_apart(copy, capsys):
    spec = yaml.safe_load((copy / "task.yml").read_text())
    spec["input_ids"] = "1-7"
    (copy / "task.yml").write_text(yaml.safe_dump(spec))
    set_config(copy / "sigma=3", "smooth", "sigma", 2)
    code, out = call(capsys, copy, "--why", "--task", copy / "sigma=3")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].startswith("  stage 'synthesize' re-runs for input(s) 7, nearest recorded execution ")
    assert lines[2] == "    field 'input_id' differs (no execution of this stage for this input is recorded)"
    assert "  stage 'smooth' re-runs for input(s) 1, 2, 3, 4, 5, 6:" in lines
    assert "    smooth/sigma: 3 → 2" in lines
    assert (
        "    field 'image' differs (produced by stage 'synthesize', which re-runs because field 'input_id' differs)"
        in lines
    )
    result = task_why(copy, "sigma=3")
    assert [(entry.stage, entry.input_ids) for entry in result.stages if entry.stage == "smooth"] == [
        ("smooth", [1, 2, 3, 4, 5, 6]),
        ("smooth", [7]),
    ]


def test_reused_stages_are_silent_and_an_up_to_date_tree_says_so(copy, capsys):
    (copy / "sigma=3" / "threshold=0.4").mkdir()
    (copy / "sigma=3" / "threshold=0.4" / "task.yml").write_text("config: {segment: {threshold: 0.4}}\n")
    code, out = call(capsys, copy, "--why")
    assert code == 0 and out.startswith("sigma=3/threshold=0.4:\n")
    assert "'synthesize'" not in out and "'smooth'" not in out
    assert re.search(r"^    segment/threshold: 0\.[356] → 0\.4$", out, re.MULTILINE)  # equally near: the latest
    run_example(copy)
    code, out = call(capsys, copy, "--why")
    assert code == 0 and out == "no pending tasks: every selected task is up to date\n"


def test_an_empty_store_has_no_execution_recorded(tmp_path, capsys):
    root = copy_example(tmp_path / "blobs")
    code, out = call(capsys, root, "--why", "--task", root / "sigma=1")
    assert code == 0
    assert out.splitlines() == ["sigma=1:"] + [
        line
        for stage in ("synthesize", "smooth", "segment", "measure")
        for line in (f"  stage '{stage}' re-runs for all inputs:", f"    {NO_EXECUTION}")
    ]
    assert not (root / ".repype").exists()  # a dry run creates no store


def test_why_writes_nothing_to_the_store(copy, capsys):
    set_config(copy / "sigma=1", "smooth", "sigma", 1.5)
    before = sorted(path.relative_to(copy) for path in (copy / ".repype").rglob("*"))
    call(capsys, copy, "--why")
    assert sorted(path.relative_to(copy) for path in (copy / ".repype").rglob("*")) == before


SETTINGS = st.dictionaries(
    st.text("abcxyz", min_size=1, max_size=3),
    st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(SETTINGS, SETTINGS)
def test_differences_name_exactly_the_hyperparameters_that_differ(before, now):
    def document(settings):
        return {"schema": 2, "stage": "s" * 40, "hyperparameters": settings, "inputs": {"x": "d"}, "extra": None}

    reasons = differences("st", document(now), document(before), {})
    changed = sorted(
        key
        for key in set(now) | set(before)
        if key not in now or key not in before or repr(now[key]) != repr(before[key])
    )
    assert [reason.split(":")[0] for reason in reasons] == [f"st/{key}" for key in changed]
    assert differences("st", document(now), document(now), {}) == []


def test_a_pending_task_whose_executions_are_all_recorded_needs_nothing(copy, capsys):
    (copy / "sigma=3" / "threshold=0.5").mkdir()  # the same config as sigma=3: everything is recorded
    (copy / "sigma=3" / "threshold=0.5" / "task.yml").write_text("config: {segment: {threshold: 0.5}}\n")
    code, out = call(capsys, copy, "--why")
    assert code == 0
    assert out == "sigma=3/threshold=0.5:\n  every stage execution is in the store: nothing needs to run\n"


def test_records_without_key_documents_cannot_say_what_differs(copy, capsys):
    store = repype.store.open(str(copy / ".repype"))
    for record in executions_by_stage(store)["segment"]:
        format1 = {
            "outputs": record.outputs,
            "run_time": record.run_time,
            "created": record.created,
            "stage": "segment",
        }
        path = layout.metadata_key(layout.record_path(record.key))
        store.backend.set(path, layout.group_document({"repype_record": format1}))
    set_config(copy / "sigma=1", "segment", "threshold", 0.45)
    code, out = call(capsys, copy, "--why", "--task", copy / "sigma=1")
    assert code == 0
    assert out.splitlines()[:3] == [
        "sigma=1:",
        "  stage 'segment' re-runs for all inputs:",
        "    its recorded executions predate key documents (format 1): cannot say what differs",
    ]
