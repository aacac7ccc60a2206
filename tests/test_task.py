"""Tasks on the store: specification, digests, pick-up from any stage execution, loading."""

from __future__ import annotations

import json
import pathlib
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from taskstages import COUNTS_ENV, read_counts
from tasktree import PIPELINE, write_tree

import repype.status
import repype.store
from repype.config import Config
from repype.pipeline import StageError
from repype.store import IntegrityError, SerializationError
from repype.task import Task, TaskError, decode_input_ids, load_from_module


@pytest.fixture
def counts(tmp_path, monkeypatch) -> pathlib.Path:
    path = tmp_path / "counts.txt"
    monkeypatch.setenv(COUNTS_ENV, str(path))
    return path


def run(task: Task, **kwargs):
    return task.run(task.create_config(), **kwargs)


def assert_data_equal(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected)
    for input_id in expected:
        assert set(actual[input_id]) == set(expected[input_id]), input_id
        for name, value in expected[input_id].items():
            got = actual[input_id][name]
            assert type(got) is type(value), (input_id, name)
            if isinstance(value, np.ndarray):
                assert got.dtype == value.dtype and got.shape == value.shape
                np.testing.assert_array_equal(got, value)
            else:
                assert got == value, (input_id, name)


# --- input ids and module loading -----------------------------------------------------------


def test_decode_input_ids_forms():
    assert decode_input_ids([3, 1, 3, "b", "a"]) == [1, 3, "a", "b"]
    assert decode_input_ids(7) == [7]
    assert decode_input_ids("1, 3-5, abc") == [1, 3, 4, 5, "abc"]
    assert decode_input_ids("2,1,,2") == [1, 2]
    assert decode_input_ids("img-a, 10") == [10, "img-a"]
    assert decode_input_ids(None) == []


@pytest.mark.parametrize("spec", ["5-3", "3-3", "3-", "-3", "1-2-3", [1.5], [[1]], 2.0, True])
def test_decode_input_ids_rejects_malformed(spec):
    with pytest.raises(ValueError):
        decode_input_ids(spec)


@given(st.lists(st.integers(min_value=0, max_value=10**6) | st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)))
def test_decode_input_ids_list_and_string_agree(ids):
    expected = sorted(set(ids), key=lambda item: (isinstance(item, str), item))
    assert decode_input_ids(ids) == expected
    assert decode_input_ids(", ".join(map(str, ids))) == expected


@given(st.integers(0, 10**4), st.integers(1, 50))
def test_decode_input_ids_ranges(first, length):
    assert decode_input_ids(f"{first}-{first + length}") == list(range(first, first + length + 1))


def test_load_from_module_follows_attributes():
    assert load_from_module("repype.task.Task") is Task
    assert load_from_module("os.path.join") is __import__("os").path.join


def test_load_from_module_names_path_and_error(tmp_path, monkeypatch):
    with pytest.raises(ImportError, match=r"no_such_module\.Stage"):
        load_from_module("no_such_module.Stage")
    with pytest.raises(ImportError, match=r"repype\.task\.NoSuchThing"):
        load_from_module("repype.task.NoSuchThing")
    (tmp_path / "brokenmod.py").write_text("import definitely_not_installed_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="definitely_not_installed_pkg"):
        load_from_module("brokenmod.Stage")


# --- specification --------------------------------------------------------------------------


def test_full_spec_is_a_deep_merge_child_wins_lists_replaced(tmp_path):
    tasks = write_tree(
        tmp_path,
        {
            "": {"config": {"scale": {"factor": 2, "keep": 1}}, "input_ids": [1, 2], "marginal_stages": ["a"]},
            "child": {"config": {"scale": {"factor": 3}}, "marginal_stages": ["b"]},
        },
    )
    spec = tasks["child"].full_spec
    assert spec["config"] == {"scale": {"factor": 3, "keep": 1}}
    assert spec["marginal_stages"] == ["b"]
    assert spec["input_ids"] == [1, 2]
    assert list(tasks["child"].parents) == [tasks[""]]
    assert tasks["child"].root is tasks[""]


def test_create_config_merges_parent_base_file_and_own_config(tmp_path):
    (tmp_path / "child").mkdir()
    (tmp_path / "child" / "base.yml").write_text("scale: {factor: 5, offset: 1}\nthreshold: {threshold: 0.1}\n")
    tasks = write_tree(
        tmp_path,
        {
            "": {"config": {"scale": {"factor": 2}, "load": {"size": 4}}},
            "child": {"base_config_path": "base.yml", "config": {"threshold": {"threshold": 0.9}}},
        },
    )
    config = tasks["child"].create_config()
    assert config.entries == {
        "scale": {"factor": 5, "offset": 1},
        "load": {"size": 4},
        "threshold": {"threshold": 0.9},
    }
    # Changes to the returned object are not reflected in the specification
    config["scale/factor"] = 100
    assert tasks["child"].create_config()["scale/factor"] == 5


def test_missing_base_config_names_task(tmp_path):
    tasks = write_tree(tmp_path, {"": {"base_config_path": "nope.yml"}})
    with pytest.raises(FileNotFoundError, match=r"nope\.yml") as info:
        tasks[""].create_config()
    assert str(tmp_path) in str(info.value)


def test_resolve_path_placeholders(tmp_path):
    tasks = write_tree(tmp_path, {"": {}, "sub": {}})
    sub = tasks["sub"]
    assert sub.resolve_path("{DIRNAME}.txt") == (tmp_path / "sub" / "sub.txt").resolve()
    assert sub.resolve_path("{ROOTDIR}/x") == (tmp_path / "x").resolve()
    assert sub.resolve_path(None) is None
    assert sub.resolve_path("~/x") == pathlib.Path("~/x").expanduser().resolve()


def test_invalid_input_ids_name_the_task(tmp_path):
    tasks = write_tree(tmp_path, {"": {"input_ids": "4-2"}})
    with pytest.raises(ValueError, match="invalid input_ids") as info:
        _ = tasks[""].input_ids
    assert str(tmp_path) in str(info.value)


def test_pipeline_errors_name_the_task(tmp_path):
    tasks = write_tree(tmp_path, {"": {"runnable": True}, "bad": {"pipeline": ["taskstages.Nope"]}})
    with pytest.raises(TaskError, match="names no pipeline"):
        tasks[""].create_pipeline()
    with pytest.raises(ImportError, match=r"taskstages\.Nope") as info:
        tasks["bad"].create_pipeline()
    assert str(tmp_path / "bad") in str(info.value)


def test_pipeline_from_class_path_and_stage_list(tmp_path):
    tasks = write_tree(tmp_path, {"": {"pipeline": "taskstages.BasicPipeline"}, "b": {"pipeline": PIPELINE}})
    ids = ["load", "scale", "threshold", "summarize"]
    assert [stage.id for stage in tasks[""].create_pipeline().stages] == ids
    assert [stage.id for stage in tasks["b"].create_pipeline().stages] == ids


def test_marginal_stages_accept_ids_and_class_paths(tmp_path):
    tasks = write_tree(tmp_path, {"": {"pipeline": PIPELINE, "marginal_stages": ["scale", "taskstages.Threshold"]}})
    pipeline = tasks[""].create_pipeline()
    assert tasks[""].get_marginal_fields(pipeline) == {"scaled", "mask"}
    assert tasks[""].strip_marginals(pipeline, {"raw": 1, "scaled": 2, "mask": 3}) == {"raw": 1}


# --- store location -------------------------------------------------------------------------


def test_store_location_default_relative_placeholder_and_url(tmp_path):
    tasks = write_tree(
        tmp_path,
        {
            "": {},
            "a": {"store": "results"},
            "a/b": {},
            "c": {"store": "{ROOTDIR}/shared-{DIRNAME}"},
            "d": {"store": "memory://somewhere", "storage_options": {"x": 1}},
        },
    )
    assert tasks[""].store_url == str((tmp_path / ".repype").resolve())
    assert tasks["a"].store_url == str((tmp_path / "a" / "results").resolve())
    assert tasks["a/b"].store_url == tasks["a"].store_url
    assert tasks["c"].store_url == str((tmp_path / "shared-c").resolve())
    assert tasks["d"].store_url == "memory://somewhere"


def test_location_is_not_part_of_digests(tmp_path, counts):
    tasks = write_tree(
        tmp_path,
        {
            "": {"runnable": True, "pipeline": PIPELINE, "input_ids": [1]},
            "elsewhere": {"store": "other-store", "storage_options": {"anon": False}},
        },
    )
    root, other = tasks[""], tasks["elsewhere"]
    assert root.compute_sha(root.create_config()) == other.compute_sha(other.create_config())
    run(other)
    for name in (".task.json", ".sha.json", "times.csv"):
        text = (other.path / name).read_text()
        assert "storage_options" not in text and "other-store" not in text and "anon" not in text
    store = other.open_store()
    stored = b"".join(store.backend.get_many(store.backend.list_prefix("manifests/")).values()).decode()
    assert store.get_manifest(other.ref_name) is not None
    assert "storage_options" not in stored and "other-store" not in stored


# --- running, digests, pending ---------------------------------------------------------------


def basic_tree(tmp_path, **root_extra):
    spec = {"runnable": True, "pipeline": PIPELINE, "input_ids": [1, 2, 3], "config": {"load": {"size": 32}}}
    spec.update(root_extra)
    return spec


def test_run_writes_digests_manifest_and_becomes_complete(tmp_path, counts):
    tasks = write_tree(tmp_path, {"": basic_tree(tmp_path)})
    task = tasks[""]
    pipeline, config = task.create_pipeline(), task.create_config()
    assert task.is_pending(pipeline, config) == "incomplete"
    data = task.run(config, pipeline)
    assert sorted(data) == [1, 2, 3]
    assert set(data[1]) == {"input_id", "raw", "scaled", "mask", "summary"}
    assert data[2]["input_id"] == 2
    assert data[1]["summary"]["shape"] == (32,)
    assert task.is_pending(pipeline, config) == ""
    digest = task.digest
    assert digest["config"]["load"]["size"] == 32
    with pytest.raises(TypeError):
        digest["config"]["load"]["size"] = 1
    sha = json.loads(task.digest_sha_filepath.read_text())
    assert sha["task"] == task.compute_sha(config)
    assert sha["stages"] == {stage.id: stage.sha for stage in pipeline.stages}
    times = task.times
    assert times["load", 1] >= 0 and times["summarize", 3] >= 0
    assert read_counts(counts)["load"] == 3
    assert task.open_store().get_manifest(".") is not None
    # Changing a hyperparameter makes the specification pending
    config["threshold/threshold"] = 0.7
    assert task.is_pending(pipeline, config) == "specification"


def test_pipeline_change_is_pending_pipeline(tmp_path, counts):
    tasks = write_tree(tmp_path, {"": basic_tree(tmp_path)})
    task = tasks[""]
    run(task)
    pipeline = task.create_pipeline()
    pipeline.stages[1].signature_bump = "v2"
    type(pipeline.stages[1]).signature_bump = "v2"
    try:
        assert task.is_pending(task.create_pipeline(), task.create_config()) == "pipeline"
    finally:
        del type(pipeline.stages[1]).signature_bump
    assert task.is_pending(task.create_pipeline(), task.create_config()) == ""


def test_rerun_reuses_everything_and_returns_equal_data(tmp_path, counts):
    task = write_tree(tmp_path, {"": basic_tree(tmp_path)})[""]
    first = run(task)
    before = read_counts(counts)
    second = run(task)
    assert read_counts(counts) == before
    assert_data_equal(second, first)
    assert_data_equal(task.load(task.create_pipeline()), first)


def test_a_rerun_without_return_data_reads_no_value(tmp_path, counts, monkeypatch):
    task = write_tree(tmp_path, {"": basic_tree(tmp_path)})[""]
    first = run(task)

    def no_reads(*args, **kwargs):
        raise AssertionError("a value was read although nobody receives it")

    monkeypatch.setattr(repype.store.Store, "get_value", no_reads)
    assert run(task, return_data=False) is None
    monkeypatch.undo()
    assert_data_equal(task.load(), first)


def test_a_first_run_asks_the_store_once_per_stage_execution(tmp_path, counts, monkeypatch):
    task = write_tree(tmp_path, {"": basic_tree(tmp_path)})[""]
    asked = []
    original = repype.store.Store.get_records

    def counting(self, keys, report_damage=True):
        keys = list(keys)
        asked.extend(keys)
        return original(self, keys, report_damage)

    monkeypatch.setattr(repype.store.Store, "get_records", counting)
    run(task)
    # 3 inputs x 4 stages, each key asked once, and once more by the run that claimed it (another
    # process may have recorded it in between: see repype.store.claims)
    assert len(set(asked)) == 3 * 4 and set(Counter(asked).values()) == {2}


def test_pickup_false_runs_everything(tmp_path, counts):
    task = write_tree(tmp_path, {"": basic_tree(tmp_path)})[""]
    run(task)
    run(task, pickup=False)
    assert read_counts(counts)["load"] == 6


def test_reuse_across_siblings(tmp_path, counts):
    specs = {"": {**basic_tree(tmp_path), "runnable": False}}
    for value in (0.2, 0.4, 0.6):
        specs[f"t={value}"] = {"runnable": True, "config": {"threshold": {"threshold": value}}}
    tasks = write_tree(tmp_path, specs)
    for rel in ("t=0.2", "t=0.4", "t=0.6"):
        run(tasks[rel])
    c = read_counts(counts)
    assert c["load"] == 3 and c["scale"] == 3  # shared by all siblings: ran once per input
    assert c["threshold"] == 9 and c["summarize"] == 9


def test_reuse_across_unrelated_tasks_sharing_a_store(tmp_path, counts):
    store = str(tmp_path / "team-store")
    one = write_tree(tmp_path / "one", {"": basic_tree(tmp_path, store=store)})[""]
    two = write_tree(tmp_path / "two", {"": basic_tree(tmp_path, store=store)})[""]
    first = run(one)
    before = read_counts(counts)
    second = run(two)
    assert read_counts(counts) == before
    assert_data_equal(second, first)
    assert two.is_pending(two.create_pipeline(), two.create_config()) == ""


def test_early_cutoff(tmp_path, counts):
    # Thresholds 0.5 and 0.5000001 give identical masks on this data: summarize must not re-run
    tasks = write_tree(
        tmp_path,
        {
            "": basic_tree(tmp_path, config={"load": {"size": 8}, "scale": {"factor": 0.0}}),
            "nudged": {"config": {"threshold": {"threshold": 0.5000001}}},
        },
    )
    run(tasks[""])
    before = read_counts(counts)
    data = run(tasks["nudged"])
    after = read_counts(counts)
    # factor 0 makes `scaled` identical for all inputs: one threshold execution serves all three
    assert after["threshold"] - before["threshold"] == 1
    assert after["summarize"] == before["summarize"]
    assert after["load"] == before["load"] and after["scale"] == before["scale"]
    assert data[1]["summary"]["count"] == 0


def test_precise_dependencies(tmp_path, counts):
    pipeline = [*PIPELINE, "taskstages.Side"]
    tasks = write_tree(
        tmp_path,
        {
            "": basic_tree(tmp_path, pipeline=pipeline),
            "rescaled": {"config": {"scale": {"factor": 3.0}}},
        },
    )
    run(tasks[""])
    before = read_counts(counts)
    run(tasks["rescaled"])
    after = read_counts(counts)
    assert after["scale"] - before["scale"] == 3
    assert after["threshold"] - before["threshold"] == 3
    assert after["side"] == before["side"]  # reads only raw: not invalidated
    assert after["load"] == before["load"]


def test_resume_after_failure(tmp_path, counts):
    pipeline = [*PIPELINE, "taskstages.Fail"]
    tasks = write_tree(
        tmp_path,
        {
            "": basic_tree(tmp_path, pipeline=pipeline, input_ids="1-5", config={"fail": {"fail_on": 4}}),
        },
    )
    task = tasks[""]
    with pytest.raises(StageError) as info:
        run(task)
    assert info.value.stage.id == "fail"
    assert read_counts(counts)["load"] == 4
    assert task.is_pending(task.create_pipeline(), task.create_config()) == "incomplete"
    # Fix the failure (hyperparameter of the last stage only): inputs 1-3 are not recomputed
    config = task.create_config()
    config["fail/fail_on"] = None
    task.run(config)
    c = read_counts(counts)
    assert c["load"] == 5  # only input 5 was new to the first stage
    assert c["summarize"] == 5


def test_marginal_stage_outputs_are_not_stored_but_recomputed_when_needed(tmp_path, counts):
    tasks = write_tree(
        tmp_path,
        {
            "": basic_tree(tmp_path, marginal_stages=["scale"]),
            "other": {"config": {"threshold": {"threshold": 0.3}}},
        },
    )
    root = tasks[""]
    data = run(root)
    assert "scaled" not in data[1]
    full = run(root, pickup=False, strip_marginals=False)
    assert "scaled" in full[1]
    store = root.open_store()
    entries = store.manifest_inputs(store.get_manifest(".")).values()
    assert all("scaled" not in entry.refs for entry in entries)
    assert all(ref["stored"] for entry in entries for ref in entry.refs.values())
    before = read_counts(counts)
    run(root)  # everything recorded: the marginal stage does not run again
    assert read_counts(counts) == before
    run(tasks["other"])  # threshold must run, it reads `scaled`: scale is recomputed, load is not
    after = read_counts(counts)
    assert after["scale"] - before["scale"] == 3
    assert after["load"] == before["load"]


def test_consumed_fields_leave_the_data_but_not_the_producer_record(tmp_path, counts):
    pipeline = ["taskstages.Load", "taskstages.Scale", "taskstages.Threshold", "taskstages.Consume"]
    task = write_tree(tmp_path, {"": basic_tree(tmp_path, pipeline=pipeline)})[""]
    data = run(task)
    assert set(data[1]) == {"input_id", "raw", "mask", "masked"}
    assert_data_equal(task.load(task.create_pipeline()), data)
    before = read_counts(counts)
    assert_data_equal(run(task), data)
    assert read_counts(counts) == before


def test_reused_data_equals_from_scratch(tmp_path, counts):
    pipeline = [*PIPELINE, "taskstages.Side"]
    tasks = write_tree(
        tmp_path,
        {
            "": basic_tree(tmp_path, pipeline=pipeline, input_ids=[1, "b"]),
            "x": {"config": {"threshold": {"threshold": 0.25}}},
        },
    )
    run(tasks[""])
    reused = run(tasks["x"])
    scratch_tree = write_tree(
        tmp_path / "scratch",
        {
            "": {
                **basic_tree(tmp_path, pipeline=pipeline, input_ids=[1, "b"]),
                "config": tasks["x"].create_config().entries,
            }
        },
    )
    scratch = run(scratch_tree[""])
    assert_data_equal(reused, scratch)
    assert isinstance(reused[1]["stats"], tuple)


def test_store_called_directly_computes_keys(tmp_path, counts):
    task = write_tree(tmp_path, {"": basic_tree(tmp_path)})[""]
    pipeline, config = task.create_pipeline(), task.create_config()
    data = {}
    for input_id in task.input_ids:
        chunk, _, _ = pipeline.process(input_id, pipeline.configure(config, input_id))
        data[input_id] = chunk
    from repype.benchmark import Benchmark

    task.store(pipeline, data, config, Benchmark(tmp_path / "unused.csv"))
    assert task.is_pending(pipeline, config) == ""
    before = read_counts(counts)
    assert_data_equal(task.load(pipeline), data)
    # The records written by store() serve a later run without any execution
    assert_data_equal(run(task), data)
    assert read_counts(counts) == before


# --- loading, integrity, reset -----------------------------------------------------------------


def test_load_subsets_lazy_and_consistency(tmp_path, counts):
    import zarr

    big = {"load": {"size": 2048}}  # 8 KiB of float32: a Zarr array; the boolean mask (2 KiB) is packed
    task = write_tree(tmp_path, {"": basic_tree(tmp_path, config=big)})[""]
    data = run(task)
    subset = task.load(input_ids=[2], fields=["raw", "summary"])
    assert list(subset) == [2] and set(subset[2]) == {"raw", "summary"}
    np.testing.assert_array_equal(subset[2]["raw"], data[2]["raw"])
    lazy = task.load(input_ids=[1], fields=["raw"], lazy=True)[1]["raw"]
    assert isinstance(lazy, zarr.Array)
    np.testing.assert_array_equal(lazy[:5], data[1]["raw"][:5])
    packed = task.load(input_ids=[1], fields=["mask"], lazy=True)[1]["mask"]
    assert type(packed) is np.ndarray and packed.tolist() == data[1]["mask"].tolist()  # tiny: loaded at once
    with pytest.raises(KeyError, match="nope"):
        task.load(input_ids=[1], fields=["nope"])
    with pytest.raises(KeyError, match="99"):
        task.load(input_ids=[99])
    # The specification now names other inputs: a full load refuses a silent subset
    task.spec["input_ids"] = [1, 2]
    with pytest.raises(TaskError, match="spurious inputs"):
        task.load()
    task.spec["input_ids"] = [1, 2, 3, 4]
    with pytest.raises(TaskError, match="missing inputs"):
        task.load()
    task.spec["input_ids"] = [1, 2, 3]
    bigger = write_tree(tmp_path / "b", {"": basic_tree(tmp_path, pipeline=[*PIPELINE, "taskstages.Side"])})[""]
    with pytest.raises(TaskError, match="inconsistent with the pipeline"):
        task.load(bigger.create_pipeline())


def test_load_without_results_is_a_clear_error(tmp_path):
    task = write_tree(tmp_path, {"": basic_tree(tmp_path)})[""]
    with pytest.raises(TaskError, match="no results"):
        task.load()


def _corrupt_blob_of(store_dir: pathlib.Path, digest: str) -> None:
    chunks = [
        p for p in (store_dir / "blobs" / digest[:2] / digest).rglob("*") if p.is_file() and p.name != "zarr.json"
    ]
    assert chunks, "the array blob has chunk files"
    for chunk in chunks:
        raw = bytearray(chunk.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        chunk.write_bytes(bytes(raw))


def test_corrupt_value_raises_on_load_and_run_recomputes(tmp_path, counts):
    big = {"load": {"size": 2048}}  # 8 KiB of float32: a Zarr array, not packed
    task = write_tree(tmp_path, {"": basic_tree(tmp_path, config=big)})[""]
    data = run(task)
    store = task.open_store()
    ref = store.manifest_inputs(store.get_manifest("."), [2])[2].refs["raw"]
    _corrupt_blob_of(tmp_path / ".repype", ref["digest"])
    with pytest.raises(IntegrityError) as info:
        task.load()
    message = str(info.value)
    assert "raw" in message and "2" in message
    before = read_counts(counts)
    with pytest.warns(UserWarning, match="recomputing"):
        again = run(task)
    assert_data_equal(again, data)
    assert read_counts(counts)["load"] - before["load"] >= 1
    assert_data_equal(task.load(), data)  # the damaged blob was rewritten


def test_reset_and_incomplete_when_manifest_is_gone(tmp_path, counts):
    task = write_tree(tmp_path, {"": basic_tree(tmp_path)})[""]
    pipeline, config = task.create_pipeline(), task.create_config()
    run(task)
    task.reset()
    assert not task.digest_sha_filepath.exists() and task.digest is None
    assert task.is_pending(pipeline, config) == "incomplete"
    assert task.open_store().get_manifest(".") is None
    before = read_counts(counts)
    run(task)  # values and records stayed: nothing is recomputed
    assert read_counts(counts) == before
    # Moving to a new (empty) store makes the task incomplete without touching keys
    task.spec["store"] = str(tmp_path / "new-store")
    assert task.is_pending(pipeline, config) == "incomplete"


def test_key_material_sees_edited_input_files(tmp_path, counts):
    source = tmp_path / "input.txt"
    source.write_text("one")
    task = write_tree(
        tmp_path,
        {
            "": {
                "runnable": True,
                "pipeline": ["taskstages.ReadFile"],
                "input_ids": [1],
                "config": {"read-file": {"path": str(source)}},
            }
        },
    )[""]
    assert run(task)[1]["text"] == "one"
    assert run(task)[1]["text"] == "one"
    assert read_counts(counts)["read-file"] == 1
    source.write_text("two")
    assert run(task)[1]["text"] == "two"
    assert read_counts(counts)["read-file"] == 2


def test_unstorable_field_names_field_and_input(tmp_path, counts):
    task = write_tree(
        tmp_path, {"": {"runnable": True, "pipeline": ["taskstages.Load", "taskstages.Unstorable"], "input_ids": [7]}}
    )[""]
    with pytest.raises(SerializationError) as info:
        run(task)
    assert "handle" in str(info.value) and "7" in str(info.value)


def test_not_runnable_task_refuses_to_run(tmp_path):
    task = write_tree(tmp_path, {"": {"pipeline": PIPELINE}})[""]
    assert task.is_pending(task.create_pipeline(), task.create_config()) == ""
    with pytest.raises(TaskError, match="not runnable"):
        run(task)


# --- status, callbacks, scopes -------------------------------------------------------------------


def test_status_events_and_config_scope(tmp_path, counts):
    task = write_tree(tmp_path, {"": basic_tree(tmp_path, scopes={"config": "cfg/%s.yml"})})[""]
    events = []
    status = repype.status.Status()
    status.subscribe(lambda update: events.append(update))
    run(task, status=status)
    infos = [event.get("info") for event in events if isinstance(event, dict)]
    assert infos[0] == "start" and "completed" in infos and "storing" in infos
    assert infos.count("process") == 3
    start = next(event for event in events if event.get("info") == "start")
    assert start["reused"] == 0 and start["first_stage"] == "load"
    assert "start-stage" in infos
    assert (tmp_path / "cfg" / "1.yml").read_text().strip().startswith("load:")
    events.clear()
    run(task, status=status)
    processed = [event for event in events if event.get("info") == "processed"]
    assert [(event["inputs"], event["reused"]) for event in processed] == [(3, 12)]  # one event: all reused
    assert "skip-stage" in [event.get("info") for event in events]


def test_setup_callbacks_calls_task_methods(tmp_path, counts):
    calls = []

    class MyTask(Task):
        def on_scale_end(self, **kwargs):
            calls.append(("end", kwargs["input_id"]))

        def on_load_after(self, **kwargs):
            calls.append(("after", kwargs["input_id"]))

    spec = basic_tree(tmp_path)
    (tmp_path / "task.yml").write_text(json.dumps(spec))
    task = MyTask(tmp_path, spec)
    task.run(task.create_config())  # creates its pipeline and connects the callbacks itself (as upstream)
    assert ("end", 1) in calls and ("after", 3) in calls
    calls.clear()
    pipeline = task.create_pipeline()  # a pipeline given by the caller is used as is
    task.run(task.create_config(), pipeline, pickup=False)
    assert calls == []


def test_config_copy_semantics_kept(tmp_path):
    assert Config({"a": {"b": 1}}).copy().entries == {"a": {"b": 1}}


def test_s3_tree(tmp_path, counts, s3_server):
    bucket = s3_server.new_bucket()
    options = s3_server.storage_options
    tasks = write_tree(
        tmp_path,
        {
            "": basic_tree(tmp_path, store=f"s3://{bucket}/results", storage_options=options, runnable=False),
            "a": {"runnable": True},
            "b": {"runnable": True, "config": {"threshold": {"threshold": 0.3}}},
        },
    )
    data = run(tasks["a"])
    run(tasks["b"])
    assert read_counts(counts)["load"] == 3
    assert_data_equal(tasks["a"].load(tasks["a"].create_pipeline()), data)
    store = repype.store.open(f"s3://{bucket}/results", storage_options=options, mode="r")
    assert store.list_refs() == ["a", "b"]
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "task.yml":
            text = path.read_text(errors="ignore")
            assert "testing" not in text and "endpoint_url" not in text and "127.0.0.1" not in text
