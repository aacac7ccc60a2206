"""Stores written by older formats keep loading: `tests/data/format1/` was written by format 1.

The fixture is copied before use, so no test changes the checked-in files.
"""

from __future__ import annotations

import importlib.util
import pathlib
import shutil

import numpy as np
import pytest
from tasktree import reused_stages

import repype.store
from repype.batch import Batch

DATA = pathlib.Path(__file__).resolve().parent / "data"


def _builder():
    spec = importlib.util.spec_from_file_location("build_format1_store", DATA / "build_format1_store.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILDER = _builder()
INPUT_IDS = [1, 2, "c"]


def expected(task: str) -> dict:
    """The data the builder's stages produce for every input of `task`."""
    config = {"describe": {"count": 310}} if task == "child" else {}
    data = {}
    for input_id in INPUT_IDS:
        raw = BUILDER.Load().process(input_id, None, _Config({"size": 8}))["raw"]
        described = BUILDER.Describe().process(raw, input_id, None, _Config(config.get("describe", {})))
        data[input_id] = {"input_id": input_id, "raw": raw, **described}
    return data


class _Config(dict):
    def get(self, key, default=None):
        return super().get(key, default)


def assert_same(actual, wanted):
    assert type(actual) is type(wanted)
    if isinstance(wanted, np.ndarray):
        assert actual.dtype == wanted.dtype and actual.shape == wanted.shape
        np.testing.assert_array_equal(actual, wanted)
    else:
        assert actual == wanted


@pytest.fixture
def tree(tmp_path) -> pathlib.Path:
    shutil.copytree(DATA / "format1", tmp_path / "format1")
    return tmp_path / "format1"


@pytest.mark.parametrize("mode", ["r", "a"])
def test_a_format1_store_opens_and_loads_every_field(tree, mode):
    store = repype.store.open(tree / "store", mode=mode)
    assert store.tasks() == [".", "child"]
    for name in store.tasks():
        view = store.task(name)
        wanted = expected(name)
        assert view.input_ids == INPUT_IDS
        assert view.fields == ["big", "input_id", "labels", "ratio", "raw", "summary"]
        assert view.config["load"] == {"size": 8}
        assert set(view.stages) == {"load", "describe"}
        assert set(view.times) == {"load", "describe"}
        assert view.created > 1.7e9
        for input_id in INPUT_IDS:
            for field, value in wanted[input_id].items():
                assert_same(view.field(input_id, field), value)


def test_a_format1_task_tree_loads_through_tasks(tree):
    batch = Batch()
    for name in [".", "child"]:
        task = batch.task(tree / name)
        data = task.load()
        assert list(data) == INPUT_IDS
        for input_id, fields in expected(name).items():
            assert set(data[input_id]) == set(fields)
            for field, value in fields.items():
                assert_same(data[input_id][field], value)
        assert task.load(input_ids=[2], fields=["summary"]) == {2: {"summary": expected(name)[2]["summary"]}}


def test_a_format1_store_verifies_clean(tree):
    report = repype.store.open(tree / "store", mode="r").verify()
    assert report.ok, report.format()
    assert report.checked_manifests == 2


def test_the_records_of_a_format1_store_are_reused_while_stage_keys_stay(tree):
    """The runner still computes the keys that format-1 code recorded (unless the key schema or a stage changed)."""
    import json

    from repype.pipeline import create_pipeline
    from repype.store import KEY_SCHEMA_VERSION

    pipeline = create_pipeline([BUILDER.Load(), BUILDER.Describe()])
    recorded = json.loads((tree / ".sha.json").read_text())["stages"]
    unchanged = []
    for stage in pipeline.stages:
        if KEY_SCHEMA_VERSION != 1 or stage.sha != recorded[stage.id]:
            break
        unchanged.append(stage.id)
    task = Batch().task(tree)
    plan = reused_stages(task, pipeline, task.create_config())
    assert plan == {input_id: unchanged for input_id in INPUT_IDS}
